"""Attention kernels for batches whose shapes never repeat.

Every batch the evaluator forwards has its own (rows, padded length): length-sorted batches
under a token budget, generation steps that grow the key length by one, reward batches of
varying length. On CUDA, torch (2.11 on Hopper and Blackwell) sends scaled-dot-product attention
with a padding mask to cuDNN's backend first, and cuDNN builds an execution plan for every new
shape before it runs: 0.1 to 0.4 s each, reused only when the same shape comes back, which here
it rarely does. Measured with ``bench/gpu.sh`` (a 1B Llama pair in bf16 on an H200): the KL
path over 110 length-sorted batches took 14.5 s, the same forwards 3.7 s once their shapes had
been seen. The flash and memory-efficient kernels need no plan.
"""

from __future__ import annotations

import contextlib
from typing import Any


def planless_attention(device: Any) -> contextlib.AbstractContextManager[Any]:
    """A context in which SDPA on ``device`` picks flash, memory-efficient or math kernels, never
    cuDNN's (scoped: the process's own backend settings are restored on exit). On a CPU, or a
    torch without ``torch.nn.attention.sdpa_kernel``, nothing changes.

    >>> with planless_attention("cpu"):
    ...     pass
    """
    if getattr(device, "type", str(device).split(":")[0]) != "cuda":
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

"""planless_attention: on CUDA, SDPA may use every kernel but cuDNN's, and only inside the context."""

from __future__ import annotations

import torch

from rlhf_eval.attention import planless_attention


def test_cuda_leaves_out_cudnn_attention_inside_the_context_only() -> None:
    before = torch.backends.cuda.cudnn_sdp_enabled()
    for device in (torch.device("cuda"), torch.device("cuda", 1), "cuda:0"):
        with planless_attention(device):
            assert not torch.backends.cuda.cudnn_sdp_enabled()
            assert torch.backends.cuda.flash_sdp_enabled()
            assert torch.backends.cuda.mem_efficient_sdp_enabled()
            assert torch.backends.cuda.math_sdp_enabled()
        assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_a_cpu_changes_nothing() -> None:
    torch.backends.cuda.enable_cudnn_sdp(True)
    for device in ("cpu", torch.device("cpu")):
        with planless_attention(device):
            assert torch.backends.cuda.cudnn_sdp_enabled()

"""How much of the machine does KL scoring use? The teacher-forced policy + reference forward of
``rlhf_eval.kl`` (the path ``pipeline.compute_kl`` runs: ``plan_kl_batches`` with the evaluator's
token budget and its logit budget of 64M, then ``estimate_kl`` on every batch), timed on a
synthetic but realistically skewed workload, against the measured matmul peak of this machine:

    .venv/bin/python bench/scoring_flops.py             # ~21M-parameter Llama, 256 samples (3-4 minutes)
    .venv/bin/python bench/scoring_flops.py --large     # ~120M-parameter Llama, 128 samples
    .venv/bin/python bench/scoring_flops.py --quick     # 48 samples, a smoke run (under a minute)
    .venv/bin/python bench/scoring_flops.py --json      # the figures as JSON on stdout
    .venv/bin/python bench/scoring_flops.py --device cuda --dtype bfloat16 --scale 1b   # bench/gpu.sh
    .venv/bin/python bench/scoring_flops.py --scale 1b --device cuda --save-models DIR   # eval-ready dirs

**Models.** A random-init Llama (``rlhf_eval.tiny``: a word-level tokenizer of ``vocab`` tokens,
``build_causal_lm``, loaded by ``rlhf_eval.models.load_causal_lm`` as the evaluator loads it) is
the policy; the reference is a copy with every weight perturbed by 5% of its tensor's standard
deviation. The LM head is scaled up 10x in both so that next-token distributions are peaked and
the KL values are O(1) (the check that an optimization leaves them unchanged then means
something). ``--policy-dir``/``--ref-dir`` time saved models instead (``bench/gpu.sh``).

**Workload.** ``--samples`` samples with prompt lengths uniform in 20..120 tokens and response
lengths log-normal (median 48, σ 0.9) clipped to 5..256 (about 3% hit the 256 cap and carry no
EOS), random token ids, in suite order (prompt by prompt, as the evaluator plans them).

**FLOPs.** Matmul parameters N = the weights of every ``nn.Linear`` (the input embedding is a
lookup, not counted; the LM head is counted even when tied), split into the body N_body and the
head N_head = V·H. Per model and per real (unpadded) token the usual convention is 2·N FLOPs:

    FLOPs_convention = 2 · (N_body + N_head) · T_real            per model, summed over both models

``estimate_kl`` asks for logits only at response positions (``logits_to_keep``), so the head's
work on prompt tokens is never needed; the stricter count is

    FLOPs_needed = 2 · N_body · T_real + 2 · N_head · T_response

Achieved FLOP/s = FLOPs / wall time of the whole path (planning, padding, both forwards, the
KL math, Python). Attention scores (≈ 4·L·H·context per token) and the full-vocabulary KL math
(log-softmax of both models, exp, difference, product, sum: ≈ 15 elementwise ops per vocabulary
entry per response position, memory-bound) are work the machine does but are *not* in either
numerator. Peak = best-of-``--repeats`` ``torch.mm`` of square matrices at the same dtype, device
and thread count, in the same run (``torch.cuda.synchronize()`` around GPU timings), before and
after the path, the better reading; because other processes load a shared machine unevenly, a
*load-matched* utilisation is also given: a 2048³ (GPU: 4096³) ``torch.mm`` is timed just before
each batch and each batch's FLOPs are divided by that local rate, Σ (FLOPs_b / peak_b) / Σ t_b.
The rate of matmuls shaped like the model's (a planned batch's padded tokens x hidden times
hidden x MLP width, and response rows x hidden times hidden x V) is shown for context. Utilisation = achieved / peak;
the target (the performance issue) is ≥ 40%.

**Padding.** Padding waste = padded tokens / real tokens, for the sequences that go through the
body, and for the response rows that go through the LM head and the KL math (B · (width + 1)
per batch against T_response). Compared: a naive batching (fixed ``--naive-batch`` samples in
suite order, padded to the batch's longest) against ``plan_kl_batches``; both are timed through
``estimate_kl`` in the same run, and their KL values must agree (different padding changes
only float rounding).

**Split.** For each planned batch, back to back (load from other processes on a shared machine
then hits the parts alike): ``estimate_kl`` (timed: the evaluator's call), the two forwards alone
(``_response_logits`` under ``inference_mode``), and the KL math (``kl_from_logits``) on their
logits. ``kl_from_logits_before`` below (the implementation before this benchmark's change to
``rlhf_eval/kl.py``: the vocabulary-wide math ran on every position of the response window,
padding included, and moved six sums to the CPU per chunk) runs on the same logits; every
estimator must agree to 1e-6 (relative, floor 1 nat: asserted) and both times are reported.

Measures only; absolute times drift on a shared machine, so compare within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import rlhf_eval.kl as kl_module  # noqa: E402
from rlhf_eval.kl import KLItem, _response_logits, estimate_kl, kl_from_logits, plan_kl_batches  # noqa: E402
from rlhf_eval.models import LoadOptions, as_tensor, load_causal_lm  # noqa: E402
from rlhf_eval.pipeline import EvalConfig  # noqa: E402
from rlhf_eval.sampling import SamplingParams, processed_logprobs  # noqa: E402

TARGET_UTILISATION = 0.40
LOGIT_BUDGET = 64 * 1024 * 1024  # pipeline.compute_kl's
TOKEN_BUDGET = next(f.default for f in fields(EvalConfig) if f.name == "token_budget")
EOS, FIRST_WORD = 1, 3
#: Model presets: hidden size, layers, heads, vocabulary, MLP width (None: the builder's 2·hidden).
SCALES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden": 64, "layers": 2, "heads": 2, "vocab": 2000, "intermediate": None},
    "small": {"hidden": 384, "layers": 6, "heads": 6, "vocab": 16000, "intermediate": None},
    "large": {"hidden": 768, "layers": 12, "heads": 12, "vocab": 32000, "intermediate": None},
    "1b": {"hidden": 2048, "layers": 16, "heads": 16, "vocab": 32000, "intermediate": 5632},
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ESTIMATORS = ("lp", "lq", "k1", "k2", "k3", "full")


# --------------------------------------------------------------------------- the code before


def kl_from_logits_before(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    params: SamplingParams,
    *,
    chunk: int = 32,
) -> dict[str, torch.Tensor]:
    """``rlhf_eval.kl.kl_from_logits`` as it was before this benchmark (verbatim), kept to check
    that the current one gives the same sums and to time both on the same logits."""
    from rlhf_eval.kl import full_vocab_kl, token_estimators

    sums = {name: torch.zeros(targets.shape[0], dtype=torch.float64) for name in ESTIMATORS}
    for start in range(0, targets.shape[1], chunk):
        window = slice(start, start + chunk)
        logp = processed_logprobs(policy_logits[:, window], params)
        logq = torch.log_softmax(ref_logits[:, window].float(), dim=-1)
        target = targets[:, window].unsqueeze(-1)
        lp = logp.gather(-1, target).squeeze(-1)
        lq = logq.gather(-1, target).squeeze(-1)
        k1, k2, k3 = token_estimators(lq - lp)
        full = full_vocab_kl(logp, logq)
        keep = mask[:, window]
        for name, value in (("lp", lp), ("lq", lq), ("k1", k1), ("k2", k2), ("k3", k3), ("full", full)):
            sums[name] += torch.where(keep, value, torch.zeros_like(value)).double().sum(dim=-1).cpu()
    return sums


# --------------------------------------------------------------------------- models and workload


def build_models(scale: dict[str, Any], device: str, dtype: torch.dtype, tmp: Path, seed: int) -> tuple[Any, Any]:
    """Policy and perturbed reference of the preset ``scale``, on ``device`` in ``dtype``.

    Presets without an MLP override are written by ``rlhf_eval.tiny.build_causal_lm`` and read back
    with ``load_causal_lm`` (the evaluator's loader, fp32), then cast; the 1B preset is built in
    memory directly on ``device`` (initialising 1B weights on a CPU takes minutes)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from rlhf_eval import tiny
    from rlhf_eval.tiny.models import model_config

    words = [f"w{i}" for i in range(scale["vocab"] - 3)]
    tok_dir = tiny.build_word_tokenizer(tmp / "tokenizer", words, model_max_length=1024)
    if scale["intermediate"] is None:
        model_dir = tiny.build_causal_lm(
            tmp / "policy", tok_dir, arch="llama", hidden_size=scale["hidden"], num_layers=scale["layers"],
            num_heads=scale["heads"], seed=seed, max_positions=1024,
        )  # fmt: skip
        policy = load_causal_lm(model_dir, LoadOptions(device=device))
    else:
        config = model_config(
            "llama", AutoTokenizer.from_pretrained(str(tok_dir)), hidden_size=scale["hidden"],
            num_layers=scale["layers"], num_heads=scale["heads"], max_positions=1024,
        )  # fmt: skip
        config.intermediate_size = scale["intermediate"]
        torch.manual_seed(seed)
        with torch.device(device):
            policy = LlamaForCausalLM(config).eval()
    policy = policy.to(dtype)
    with torch.no_grad():
        policy.get_output_embeddings().weight.mul_(10.0)
    return policy, perturbed_copy(policy, seed + 1)


def save_models(out: Path, scale: dict[str, Any], device: str, dtype: torch.dtype, seed: int) -> dict[str, str]:
    """Model directories for an end-to-end ``rlhf-eval eval`` at this scale (``bench/gpu.sh``):
    ``ref`` (random-init Llama), ``run/policy`` (its perturbed copy), ``rm`` (a Llama reward model
    of the same size, one label), all safetensors in ``dtype`` with the word-level tokenizer, plus
    ``gold.py`` (a Python gold scorer) and ``prompts.jsonl`` (64 prompts of 8..24 words).
    Built directly on ``device`` (a 1B model initialises in seconds on a GPU)."""
    from transformers import AutoTokenizer, LlamaForCausalLM, LlamaForSequenceClassification

    from rlhf_eval import tiny
    from rlhf_eval.tiny.models import model_config
    from rlhf_eval.tiny.training import save_model_and_tokenizer

    words = [f"w{i}" for i in range(scale["vocab"] - 3)]
    tok_dir = tiny.build_word_tokenizer(out / "tokenizer", words, model_max_length=1024)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    shape = {"hidden_size": scale["hidden"], "num_layers": scale["layers"], "num_heads": scale["heads"]}
    config = model_config("llama", tokenizer, max_positions=1024, **shape)
    rm_config = model_config("llama", tokenizer, max_positions=1024, num_labels=1, **shape)
    for c in (config, rm_config):
        c.intermediate_size = scale["intermediate"] or 2 * scale["hidden"]
    torch.manual_seed(seed)
    with torch.device(device):
        ref = LlamaForCausalLM(config).to(dtype).eval()
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(ref.generation_config, name, getattr(config, name))
        save_model_and_tokenizer(ref, tokenizer, out / "ref")
        save_model_and_tokenizer(perturbed_copy(ref, seed + 1), tokenizer, out / "run" / "policy")
        del ref
        rm = LlamaForSequenceClassification(rm_config).to(dtype).eval()
        save_model_and_tokenizer(rm, tokenizer, out / "rm")
        del rm
    (out / "gold.py").write_text(
        "def score(prompts, responses):\n    return [len(set(r.split())) - 0.1 * len(r.split()) for r in responses]\n",
        encoding="utf-8",
    )
    rng = np.random.default_rng(seed)
    with (out / "prompts.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(64):
            text = " ".join(words[int(k)] for k in rng.integers(0, len(words), size=int(rng.integers(8, 25))))
            handle.write(json.dumps({"prompt": f"{words[i]} {text}"}) + "\n")
    return {name: str(out / name) for name in ("ref", "run/policy", "rm", "gold.py", "prompts.jsonl")}


def perturbed_copy(model: Any, seed: int, relative: float = 0.05) -> Any:
    """A deep copy with every floating tensor t replaced by t + relative · std(t) · N(0, 1)."""
    ref = copy.deepcopy(model)
    generators: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for param in ref.parameters():
            if param.numel() > 1 and param.is_floating_point():
                generator = generators.setdefault(param.device, torch.Generator(param.device).manual_seed(seed))
                noise = torch.randn(param.shape, generator=generator, device=param.device, dtype=param.dtype)
                param.add_(noise * (relative * param.float().std()).to(param.dtype))
    return ref.eval()


def load_pair(policy_dir: str, ref_dir: str, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """Saved policy and reference through the evaluator's loader, cast to ``dtype``."""
    options = LoadOptions(device=device)
    return (
        load_causal_lm(Path(policy_dir), options).to(dtype),
        load_causal_lm(Path(ref_dir), options).to(dtype),
    )


def workload(samples: int, vocab: int, seed: int, max_new_tokens: int = 256) -> list[KLItem]:
    """Synthetic samples in suite order: prompts of 20..120 tokens, responses log-normal (median
    48, σ 0.9) clipped to 5..max_new_tokens, EOS-terminated unless they hit the cap."""
    rng = np.random.default_rng(seed)
    prompt_lengths = rng.integers(20, 121, size=samples)
    response_lengths = np.clip(np.round(rng.lognormal(np.log(48), 0.9, size=samples)), 5, max_new_tokens).astype(int)
    items = []
    for i, (p, r) in enumerate(zip(prompt_lengths, response_lengths, strict=True)):
        prompt = rng.integers(FIRST_WORD, vocab, size=int(p)).tolist()
        response = rng.integers(FIRST_WORD, vocab, size=int(r)).tolist()
        if r < max_new_tokens:
            response[-1] = EOS
        items.append(KLItem(f"s{i:06d}", tuple(prompt), tuple(response)))
    return items


def naive_batches(items: Sequence[KLItem], size: int) -> list[list[KLItem]]:
    """Fixed-size batches in suite order (each padded to its own longest sequence)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def padding(batches: Sequence[Sequence[KLItem]]) -> dict[str, float]:
    """Real and padded token counts of a batching: sequences (the body's input, left-padded to the
    batch's longest) and response rows (LM head and KL math: B · (width + 1) per batch)."""
    real = sum(len(i.prompt_ids) + len(i.response_ids) for b in batches for i in b)
    response = sum(len(i.response_ids) for b in batches for i in b)
    padded = sum(len(b) * max(len(i.prompt_ids) + len(i.response_ids) for i in b) for b in batches)
    rows = sum(len(b) * (max(len(i.response_ids) for i in b) + 1) for b in batches)
    return {
        "batches": len(batches),
        "mean_batch_size": statistics.fmean(len(b) for b in batches),
        "real_tokens": real,
        "response_tokens": response,
        "padded_tokens": padded,
        "sequence_waste": (padded - real) / real,
        "logit_rows": rows,
        "logit_row_waste": (rows - response) / response,
    }


# --------------------------------------------------------------------------- timing


#: ``--attention``: which SDPA kernels the forwards may use (reported with the machine)
ATTENTION = ["planless"]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(call: Callable[[], Any], device: str) -> tuple[float, Any]:
    sync(device)
    started = time.perf_counter()
    result = call()
    sync(device)
    return time.perf_counter() - started, result


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, device: str, repeats: int) -> float:
    """Best-of-``repeats`` FLOP/s of ``torch.mm`` of an (m x k) by a (k x n) matrix (2·m·k·n FLOPs)."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up (thread pool, cuBLAS handle)
    best = min(timed(lambda: torch.mm(a, b), device)[0] for _ in range(repeats))
    return 2.0 * m * k * n / best


def matmul_params(model: Any) -> tuple[int, int]:
    """(N_body, N_head): weights of the ``nn.Linear`` modules other than the output embedding, and
    the output embedding's (V·H, counted even when tied to the input embedding)."""
    head = model.get_output_embeddings()
    body = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    return body, head.weight.numel()


def run_path(
    policy: Any, ref: Any, batches: Sequence[Sequence[KLItem]], params: SamplingParams, device: str
) -> tuple[float, dict[str, Any]]:
    """Seconds for ``estimate_kl`` over every batch, and its estimates by sample id."""

    def call() -> dict[str, Any]:
        return {e.sample_id: e for b in batches for e in estimate_kl(policy, ref, b, params, pad_id=0)}

    return timed(call, device)


def both_forwards(policy: Any, ref: Any, ids: torch.Tensor, mask: torch.Tensor, width: int) -> tuple[Any, Any]:
    """The two teacher-forced forwards of ``estimate_kl``: logits at the response positions, under
    the same attention kernels."""
    with kl_module.planless_attention(ids.device):
        return _response_logits(policy, ids, mask, width), _response_logits(ref, ids, mask, width)


def batch_flops(batch: Sequence[KLItem], body: int, head: int) -> tuple[float, float]:
    """(convention, needed) FLOPs of one batch for both models (see the module docstring)."""
    real = sum(len(i.prompt_ids) + len(i.response_ids) for i in batch)
    response = sum(len(i.response_ids) for i in batch)
    return 2.0 * 2 * (body + head) * real, 2.0 * 2 * (body * real + head * response)


def planned_pass(
    policy: Any,
    ref: Any,
    batches: Sequence[Sequence[KLItem]],
    params: SamplingParams,
    device: str,
    local_peak: Callable[[], float],
) -> dict[str, Any]:
    """Per planned batch, back to back (so that load on a shared machine hits all alike): a
    ``local_peak()`` matmul reading, ``estimate_kl`` (the evaluator's call), then both forwards
    alone, then ``kl_from_logits`` and ``kl_from_logits_before`` on their logits (alternating which
    goes first). Returns the summed seconds of each, the estimates, the worst relative
    disagreement of the two KL maths, and the seconds each batch would take at its local peak."""
    seconds = dict.fromkeys(("estimate_kl", "forwards", "kl_math", "kl_math_before"), 0.0)
    at_peak = {"convention": 0.0, "needed": 0.0}
    local_peaks = []
    body, head = matmul_params(policy)
    estimates: dict[str, Any] = {}
    worst = 0.0
    for index, batch in enumerate(batches):
        local_peaks.append(local_peak())
        took, out = timed(partial(estimate_kl, policy, ref, batch, params, 0), device)
        seconds["estimate_kl"] += took
        convention, needed = batch_flops(batch, body, head)
        at_peak["convention"] += convention / local_peaks[-1]
        at_peak["needed"] += needed / local_peaks[-1]
        estimates.update((e.sample_id, e) for e in out)
        sequences = [list(i.prompt_ids) + list(i.response_ids) for i in batch]
        ids, mask = as_tensor(sequences, 0, left=True)
        lengths = torch.tensor([len(i.response_ids) for i in batch])
        width = int(lengths.max())
        targets = ids[:, -width:].to(device)
        response_mask = (torch.arange(width).unsqueeze(0) >= (width - lengths).unsqueeze(1)).to(device)
        ids, mask = ids.to(device), mask.to(device)
        with torch.inference_mode():
            took, (p_logits, q_logits) = timed(partial(both_forwards, policy, ref, ids, mask, width), device)
            seconds["forwards"] += took
            calls = [(kl_from_logits, "kl_math"), (kl_from_logits_before, "kl_math_before")]
            results = {}
            for fn, name in calls if index % 2 == 0 else calls[::-1]:
                took, results[name] = timed(partial(fn, p_logits, q_logits, targets, response_mask, params), device)
                seconds[name] += took
        del p_logits, q_logits
        for key in ESTIMATORS:
            now, before = results["kl_math"][key].double().cpu(), results["kl_math_before"][key]
            worst = max(worst, float(((now - before).abs() / before.abs().clamp(min=1.0)).max()))
    return {
        "seconds": seconds,
        "estimates": estimates,
        "max_rel_diff": worst,
        "at_local_peak": at_peak,
        "local_peaks": local_peaks,
    }


def peak_rates(sizes: Sequence[int], dtype: torch.dtype, device: str, repeats: int) -> dict[int, float]:
    """Best-of-``repeats`` ``torch.mm`` FLOP/s of square matrices of each size."""
    return {n: matmul_rate(n, n, n, dtype, device, repeats) for n in sizes}


def machine(device: str, dtype: torch.dtype) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "attention": ATTENTION[0],
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small", help="model preset (default ~21M)")
    parser.add_argument("--large", action="store_true", help="--scale large (~120M) with 256 samples")
    parser.add_argument("--quick", action="store_true", help="48 samples, fewer repeats, one peak size")
    parser.add_argument("--samples", type=int, default=None, help="samples (default 256; 128 with --large on a CPU)")
    parser.add_argument("--naive-batch", type=int, default=16, help="batch size of the naive batching")
    parser.add_argument("--token-budget", type=int, default=TOKEN_BUDGET, help="the evaluator's token budget")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--policy-dir", default=None, help="a saved policy instead of a built one")
    parser.add_argument("--ref-dir", default=None, help="a saved reference (with --policy-dir)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each peak matmul (best shown)")
    parser.add_argument("--save-models", default=None, metavar="DIR", help="only write eval-ready models, then exit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--attention",
        choices=("planless", "torch-default"),
        default="planless",
        help="SDPA kernels of the forwards: the evaluator's (no cuDNN plans, rlhf_eval.attention) or torch's own order",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    ATTENTION[0] = args.attention
    if args.attention == "torch-default":  # the evaluator's path as it was before rlhf_eval.attention
        kl_module.planless_attention = lambda device: contextlib.nullcontext()
    if args.large:
        args.scale = "large"
    if args.samples is None:
        args.samples = 48 if args.quick else 128 if args.scale in ("large", "1b") and args.device == "cpu" else 256
    if args.threads:
        torch.set_num_threads(args.threads)
    if bool(args.policy_dir) != bool(args.ref_dir):
        parser.error("--policy-dir and --ref-dir go together")
    dtype, device = DTYPES[args.dtype], args.device
    torch.manual_seed(args.seed)
    if args.save_models:
        written = save_models(Path(args.save_models), SCALES[args.scale], device, dtype, args.seed)
        print(json.dumps(written, indent=2))
        return

    def log(*parts: Any) -> None:
        print(*parts, file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="scoring_flops_") as tmp:
        if args.policy_dir:
            policy, ref = load_pair(args.policy_dir, args.ref_dir, device, dtype)
        else:
            policy, ref = build_models(SCALES[args.scale], device, dtype, Path(tmp), args.seed)
    vocab = int(policy.config.vocab_size)
    body, head = matmul_params(policy)
    total_params = sum(p.numel() for p in policy.parameters())
    hidden = int(policy.config.hidden_size)
    mlp = int(getattr(policy.config, "intermediate_size", 4 * hidden))
    log(f"policy: {total_params / 1e6:.1f}M parameters ({body / 1e6:.1f}M body matmul, {head / 1e6:.1f}M LM head), "
        f"vocab {vocab}, {device} {args.dtype}, {torch.get_num_threads()} threads")  # fmt: skip

    items = workload(args.samples, vocab, args.seed)
    params = SamplingParams(max_new_tokens=256)
    planned = plan_kl_batches(items, args.token_budget, vocab, logit_budget=LOGIT_BUDGET)
    naive = naive_batches(items, args.naive_batch)
    pad_planned, pad_naive = padding(planned), padding(naive)
    real, response = pad_planned["real_tokens"], pad_planned["response_tokens"]
    flops_convention = 2 * 2 * (body + head) * real  # two models
    flops_needed = 2 * 2 * (body * real + head * response)

    # warm-up: one small batch through the path (thread pools, kernels, CUDA context)
    estimate_kl(policy, ref, planned[-1][:2], params, pad_id=0)
    sizes = (4096, 8192) if device.startswith("cuda") else (2048, 4096)
    sizes = sizes[:1] if args.quick else sizes
    repeats = 2 if args.quick else args.repeats
    log("matmul peak (before) ...")
    peaks_before = peak_rates(sizes, dtype, device, repeats)
    log("plan_kl_batches, then per batch: estimate_kl (the evaluator's path), both forwards, KL math ...")
    planning_s, _ = timed(partial(plan_kl_batches, items, args.token_budget, vocab, logit_budget=LOGIT_BUDGET), device)
    local_size = sizes[0]
    split = planned_pass(
        policy, ref, planned, params, device, partial(matmul_rate, local_size, local_size, local_size, dtype, device, 2)
    )
    planned_s = planning_s + split["seconds"]["estimate_kl"]
    log(f"  {planned_s:.2f} s; naive batches of {args.naive_batch} ...")
    naive_s, naive_est = run_path(policy, ref, naive, params, device)
    log(f"  {naive_s:.2f} s; matmul peak (after) and model-shaped matmuls ...")
    peaks_after = peak_rates(sizes, dtype, device, repeats)
    planned_est = split["estimates"]
    path_agreement = max(
        abs(planned_est[k].full - naive_est[k].full) / max(1.0, abs(naive_est[k].full)) for k in planned_est
    )
    assert split["max_rel_diff"] < 1e-6, f"kl_from_logits changed the sums: {split['max_rel_diff']:.2e}"
    peaks = {n: max(peaks_before[n], peaks_after[n]) for n in sizes}
    peak = max(peaks.values())
    tokens = int(statistics.median(len(b) * max(len(i.prompt_ids) + len(i.response_ids) for i in b) for b in planned))
    rows = int(statistics.median(len(b) * (max(len(i.response_ids) for i in b) + 1) for b in planned))
    shapes = {
        f"[{tokens}x{hidden}]x[{hidden}x{hidden}] attention projection": (tokens, hidden, hidden),
        f"[{tokens}x{hidden}]x[{hidden}x{mlp}] MLP": (tokens, hidden, mlp),
        f"[{rows}x{hidden}]x[{hidden}x{vocab}] LM head": (rows, hidden, vocab),
    }
    shaped = {name: matmul_rate(*shape, dtype, device, repeats) for name, shape in shapes.items()}

    achieved_conv, achieved_needed = flops_convention / planned_s, flops_needed / planned_s
    sec = split["seconds"]
    other_s = planned_s - sec["forwards"] - sec["kl_math"]
    result: dict[str, Any] = {
        "machine": machine(device, dtype),
        "repeats": repeats,
        "model": {
            "scale": None if args.policy_dir else args.scale,
            "parameters": total_params,
            "matmul_body": body,
            "lm_head": head,
            "hidden": hidden,
            "layers": int(policy.config.num_hidden_layers),
            "vocab": vocab,
        },
        "workload": {
            "samples": len(items),
            "real_tokens": real,
            "response_tokens": response,
            "token_budget": args.token_budget,
            "logit_budget": LOGIT_BUDGET,
        },
        "padding": {"naive": pad_naive, "planned": pad_planned},
        "seconds": {
            "planned_path": planned_s,
            "naive_path": naive_s,
            "planning": planning_s,
            "forwards_alone": sec["forwards"],
            "kl_math": sec["kl_math"],
            "kl_math_before": sec["kl_math_before"],
            "other_in_path": other_s,
        },
        "flops": {"convention": flops_convention, "needed": flops_needed},
        "rates": {
            "achieved_convention": achieved_conv,
            "achieved_needed": achieved_needed,
            "forwards_alone_needed": flops_needed / sec["forwards"],
            "peak": peak,
            "peak_by_size": {str(n): v for n, v in peaks.items()},
            "peak_before": {str(n): v for n, v in peaks_before.items()},
            "peak_after": {str(n): v for n, v in peaks_after.items()},
            "local_peaks": split["local_peaks"],
            "local_size": local_size,
            "shaped": shaped,
        },
        "checks": {
            "kl_from_logits_now_vs_before_max_rel_diff": split["max_rel_diff"],
            "planned_vs_naive_full_kl_max_rel_diff": path_agreement,
        },
        "targets": {
            name: {"value": value, "target": TARGET_UTILISATION, "met": value >= TARGET_UTILISATION}
            for name, value in (
                ("utilisation_convention", achieved_conv / peak),
                ("utilisation_needed", achieved_needed / peak),
                ("utilisation_convention_load_matched", split["at_local_peak"]["convention"] / sec["estimate_kl"]),
                ("utilisation_needed_load_matched", split["at_local_peak"]["needed"] / sec["estimate_kl"]),
            )
        },
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return
    report(result, args)


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    """The human-readable tables."""
    m, mo, w, s, rt = r["machine"], r["model"], r["workload"], r["seconds"], r["rates"]
    g = 1e9
    gpu = f", {m['gpu']}" if "gpu" in m else ""
    print(f"machine: {m['cpu']}, {m['cores']} cores{gpu}; torch {m['torch']}, {m['torch_threads']} threads, "
          f"{m['device']} {m['dtype']}; load average {m['load_average']:.1f}; {m['date']}")  # fmt: skip
    print(f"model: Llama, {mo['parameters'] / 1e6:.1f}M parameters: {mo['matmul_body'] / 1e6:.2f}M body matmul + "
          f"{mo['lm_head'] / 1e6:.2f}M LM head (+ input embedding, not counted), hidden {mo['hidden']}, "
          f"{mo['layers']} layers, vocab {mo['vocab']}; policy and a perturbed copy as reference")  # fmt: skip
    print(f"workload: {w['samples']} samples, {w['real_tokens']} real tokens ({w['response_tokens']} response); "
          f"token budget {w['token_budget']}, logit budget {w['logit_budget'] // (1 << 20)}M")  # fmt: skip
    print()
    print("| batching | batches | mean size | seq. padding waste | logit-row waste | estimate_kl time | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, key, seconds in ((f"naive, {args.naive_batch} in suite order", "naive", s["naive_path"]),
                               ("plan_kl_batches", "planned", s["planned_path"])):  # fmt: skip
        p = r["padding"][key]
        print(f"| {name} | {p['batches']} | {p['mean_batch_size']:.1f} | {p['sequence_waste']:.1%} | "
              f"{p['logit_row_waste']:.1%} | {seconds:.2f} s | {seconds / s['planned_path']:.2f} |")  # fmt: skip
    print()
    print("| planned path, time split | seconds | share |")
    print("|---|---|---|")
    for name, value in (("both forwards (_response_logits, inference_mode)", s["forwards_alone"]),
                        ("KL math (kl_from_logits, full vocabulary)", s["kl_math"]),
                        ("rest of estimate_kl (padding, Python), planning", s["other_in_path"]),
                        ("whole path (plan_kl_batches + estimate_kl)", s["planned_path"])):  # fmt: skip
        print(f"| {name} | {value:.2f} | {value / s['planned_path']:.0%} |")
    print(f"| (KL math before the kl.py change, same logits) | {s['kl_math_before']:.2f} | "
          f"{s['kl_math_before'] / s['kl_math']:.2f}x the current |")  # fmt: skip
    print()
    print("| rate | GFLOP/s | of peak |")
    print("|---|---|---|")
    lines = [
        (f"torch.mm {n}x{n}x{n}, best of {r['repeats']}, before / after the path: "
         f"{rt['peak_before'][n] / g:.1f} / {rt['peak_after'][n] / g:.1f}; best", v)
        for n, v in rt["peak_by_size"].items()
    ]  # fmt: skip
    lines += [(f"torch.mm {name}", v) for name, v in rt["shaped"].items()]
    lines += [
        ("both forwards alone, needed FLOPs / forward time", rt["forwards_alone_needed"]),
        ("whole path, 2·N·T convention", rt["achieved_convention"]),
        ("whole path, needed FLOPs", rt["achieved_needed"]),
    ]
    for name, v in lines:
        print(f"| {name} | {v / g:.1f} | {v / rt['peak']:.0%} |")
    c = r["checks"]
    print()
    before = c["kl_from_logits_now_vs_before_max_rel_diff"]
    print(f"checks: kl_from_logits vs before, max relative difference {before:.1e} "
          f"(asserted < 1e-6); planned vs naive batching, full KL max relative difference "
          f"{c['planned_vs_naive_full_kl_max_rel_diff']:.1e} (padding changes rounding only)")  # fmt: skip
    print()
    print("| target | figure | |")
    print("|---|---|---|")
    t = r["targets"]
    local = r["rates"]["local_peaks"]
    rows = (
        ("utilisation_convention", "2·(N_body + N_head)·T_real per model, vs the run's best torch.mm"),
        ("utilisation_needed", "2·N_body·T_real + 2·N_head·T_response per model, vs the run's best torch.mm"),
        ("utilisation_convention_load_matched", "2·(N_body + N_head)·T_real, vs torch.mm timed just before each batch"),
        ("utilisation_needed_load_matched", "2·N_body·T_real + 2·N_head·T_response, vs torch.mm before each batch"),
    )
    for key, what in rows:
        print(f"| utilisation ≥ 40%: {what} | {t[key]['value']:.1%} | {verdict(t[key]['met'])} |")
    size = r["rates"]["local_size"]
    print(f"(torch.mm {size}³ just before each batch: {min(local) / g:.0f}..{max(local) / g:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()

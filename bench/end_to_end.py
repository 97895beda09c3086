"""How much faster is ``rlhf-eval eval`` than the script most users would write with the standard
stack, and how fast is an identical rerun on the same database? Side by side in one run, on
models built offline in a temporary folder:

    .venv/bin/python bench/end_to_end.py            # 32 prompts x 4 samples x 48 new tokens (~6 min)
    .venv/bin/python bench/end_to_end.py --quick    # 6 prompts x 2 samples x 16 new tokens (~1.5 min)
    .venv/bin/python bench/end_to_end.py --json     # the figures as JSON on stdout
    .venv/bin/python bench/end_to_end.py --prompts 64 --samples 8 --max-new-tokens 64 --threads 2
    .venv/bin/python bench/end_to_end.py --device cuda --hidden 1024 --layers 12   # bench/gpu.sh

**Models** (``rlhf_eval.tiny``, nothing downloaded). A word-level tokenizer over a vocabulary of
``--vocab`` made-up words; a random-init GPT-2 reference (``--hidden``, ``--layers``; about 12M
parameters by default) whose EOS is made likely (the final layer norm's bias and the tied EOS
embedding point the same way, so the EOS logit is about 4.5 nats above the rest, varying with
the context) so that responses end at different lengths, most before ``max_new_tokens``; a
Trainer-style run directory ``run/checkpoint-{100,200,300,400}/`` (weights, tokenizer,
``trainer_state.json``) whose weights are the reference's plus Gaussian noise of growing size
(``--noise`` x k x each tensor's standard deviation), so KL grows along the run; and two GPT-2
sequence classifiers with one label (proxy and gold: two different reward models, so both
sides score every sample twice), sharing their own word tokenizer: another vocabulary order
plus words the policy lacks, so token ids differ from the policy's. Prompts are made-up
sentences of 6 to 20 vocabulary words.

**Paths timed**, each doing the same work on the same 5 models (the reference and 4
checkpoints) x P prompts x S samples, raw sampling (temperature 1, top-p 1, top-k off, unless
``--temperature``/``--top-p`` say otherwise) with ``max_new_tokens`` M:

1. naive stack, a script run as a fresh ``python`` process (wall time: the interpreter and its
   imports included, as for the command in 2; ``--naive-script``, its figures back as JSON): per checkpoint
   ``transformers.pipeline("text-generation")`` called once per prompt (``do_sample``,
   ``num_return_sequences=S``, the same M, temperature, top-p and ``top_k=0``,
   ``return_tensors=True`` for the token ids); per sample a policy forward and a reference
   forward over prompt + response ids, log-probs of the response tokens (EOS included, as the
   harness counts it) summed: ``logp_policy``, ``logp_ref`` and k1 = their difference (under
   temperature/top-p the policy's logits go through transformers' own warpers first); per sample
   ``pipeline("text-classification", function_to_apply="none")`` on ``f"{prompt} {response}"``
   for the proxy and for the gold RM; every row (sample, KL, two scores) inserted into DuckDB
   with its own ``con.execute("INSERT ...", [...])``. The reward pipelines and the reference are
   loaded once; the reference's KL under raw sampling is 0 without a forward (as the harness does);
2. ``rlhf-eval eval`` as a command (a fresh process: interpreter and imports included) on a new
   database, with ``--no-analysis`` (the over-optimization analysis has no counterpart in the
   naive script) and ``--no-progress``;
3. the identical command again on the same database (everything cached): first as a user
   reruns it, replaying the receipt the first run left beside the database (``receipt.py``:
   every input, the code and the database file are stat-ed unchanged, so the answer is printed
   without opening the database); then with the receipt removed, so that it answers read-only
   from the database without loading a model or tokenizer, and beside it a process that only
   starts Python and imports the modules that answer needs: the floor of that path;
4. ``rlhf_eval.pipeline.evaluate(EvalConfig(...))`` in this process on another new database,
   with each stage timed (wrappers around the pipeline's stage methods; a stage's time excludes
   the model loads inside it), then again on that database (cached).

The harness also runs its detectors (features) on every sample, work the naive script skips.
Every path runs torch on ``--threads`` threads (the processes get ``OMP_NUM_THREADS``); the
default, 0, is torch's own default, every core, as a user runs either side. ``make bench`` runs
it again on one thread: on a shared machine a second thread makes both sides several times
slower whenever another process holds the other core (16 samples of 24 tokens from the
reference: 0.6 s on one thread, 3.2 s on two), so a one-thread run is the one to trust there,
and the two targets move in opposite directions with the threads (the faster first run makes
the cached ratio smaller; docs/performance.md).

**Correctness.** Generation cannot be compared token for token (the harness has its own seeded
inverse-CDF sampler), so after the timings the naive KL and reward code runs on ``--check``
samples that the harness stored (spread over the 4 checkpoints, read from the first database:
``samples``, ``kl``, ``scores``): it re-tokenizes each prompt's text (which must give the stored
prompt ids), forwards prompt + stored response ids, scores the stored response text. Reported:
the max absolute difference of logp_policy, logp_ref, k1, proxy and gold reward; the script
exits with an error unless they agree within 4 (M + 1) ε relative, ε = 2^-23 the fp32 rounding
unit (2.3e-5 at M = 48). Why that bound: both sides compute fp32 logits of the same ids, but the
harness pads left in batches (with explicit position ids) and sums per-token values in float64,
while the naive code runs one unpadded row and sums up to M + 1 fp32 terms, whose rounding alone
can reach (M + 1) ε relative; the factor 4 covers the logits' own rounding differences. Log-probs
are compared relative to |value|, k1 (a difference of two such sums, so its rounding is theirs)
relative to |logp_policy| + |logp_ref|, rewards (one forward of the same ids each side: no input
is longer than the RM's context, so neither truncates) relative to max(1, |reward|). A real
mismatch is far larger: leaving out the EOS token moves logp by -log π(EOS | context), a few
nats with these models (~1e-2 relative), not conditioning on the prompt changes every token's
log-prob, and the text-classification pipeline's default sigmoid maps a logit r to 1/(1+e^-r).

Targets (the performance issue): rlhf-eval's first run at least 5x faster than the naive stack
(verdict on the command's wall time, which includes its imports; the in-process figure is shown
beside it); the cached rerun at least 100x faster than the first run, shown both for the
command (wall time, including the interpreter's start and imports) and in process. The machine is
shared: absolute times drift; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

TARGET_SPEEDUP = 5.0
TARGET_CACHED = 100.0
#: Where every path runs its models (``--device``); the harness is pinned to it through
#: CUDA_VISIBLE_DEVICES on a CPU run.
DEVICE = "cpu"
DEFAULT_SIZE = (32, 4, 48)  # prompts, samples per prompt, max_new_tokens
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
EOS_BIAS = 4.5
STEPS = (100, 200, 300, 400)


@dataclass
class World:
    """The models, suite and prompts built for one benchmark run."""

    root: Path
    ref: Path
    run: Path
    checkpoints: list[Path]
    proxy: Path
    gold: Path
    suite: Path
    prompts: list[str]
    params: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Sizes:
    prompts: int
    samples: int
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int = 0

    @property
    def is_raw(self) -> bool:
        return self.temperature == 1.0 and self.top_p >= 1.0


# -- models, offline -----------------------------------------------------------------------------


def made_up_words(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct words of 1 to 3 consonant-vowel syllables, in a Zipf-ranked order (a
    generated corpus's frequency order)."""
    syllables = [c + v for c in CONSONANTS for v in VOWELS]
    found: dict[str, None] = {}
    while len(found) < count:
        found.setdefault("".join(rng.choice(syllables, size=int(rng.integers(1, 4)))), None)
    return list(found)


def bias_eos(model: Any, eos_id: int, strength: float, seed: int) -> None:
    """Make EOS likely at every position of a random GPT-2: the final layer norm's bias and the
    (tied) EOS embedding both get the same unit vector u, so the EOS logit is strength + <ln(x), u>
    (about strength ± 1 nats) while the other logits stay near 0."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(model.config.n_embd, generator=generator)
    u /= u.norm()
    with torch.no_grad():
        model.transformer.ln_f.bias.copy_(strength * u)
        model.transformer.wte.weight[eos_id].copy_(u)


def noisy_copy(model: Any, scale: float, seed: int) -> dict[str, torch.Tensor]:
    """The model's weights plus N(0, (scale x the tensor's std)²) noise (0.02 for constant tensors)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, param in model.named_parameters():
        std = float(param.detach().float().std()) if param.numel() > 1 else 0.0
        noise = torch.randn(param.shape, generator=generator) * scale * (std or 0.02)
        state[name] = param.detach() + noise
    return state


def build_world(root: Path, args: argparse.Namespace, sizes: Sizes) -> World:
    """Tokenizers, reference, the run of 4 checkpoints, two reward models and the suite under ``root``."""
    from transformers import AutoModelForCausalLM

    from rlhf_eval.tiny import build_causal_lm, build_reward_model, build_word_tokenizer
    from rlhf_eval.tiny.training import quiet_transformers

    rng = np.random.default_rng(args.seed)
    words = made_up_words(rng, args.vocab + args.vocab // 10)
    policy_words, extra = words[: args.vocab], words[args.vocab :]
    kept = [w for w in policy_words if rng.random() > 0.1]  # the RM lacks ~10% of the policy's words
    rm_words = [*extra, *rng.permutation(kept).tolist()]
    policy_tok = build_word_tokenizer(root / "policy_tokenizer", policy_words)
    rm_tok = build_word_tokenizer(root / "rm_tokenizer", rm_words)

    ref = root / "reference"
    build_causal_lm(
        ref, policy_tok, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads, seed=args.seed
    )
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(ref)).eval()
    bias_eos(model, int(model.config.eos_token_id), EOS_BIAS, args.seed)
    with quiet_transformers():
        model.save_pretrained(str(ref))
    run = root / "run"
    checkpoints = []
    for k, step in enumerate(STEPS, start=1):
        out = run / f"checkpoint-{step}"
        with quiet_transformers():
            copy = AutoModelForCausalLM.from_pretrained(str(ref)).eval()
        copy.load_state_dict(noisy_copy(model, args.noise * k, args.seed + k), strict=False)
        with quiet_transformers():
            copy.save_pretrained(str(out))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(ref / name, out / name)
        state = {
            "global_step": step,
            "log_history": [{"step": s, "loss": 2.0 - 0.1 * i} for i, s in enumerate(STEPS[:k])],
        }
        (out / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
        checkpoints.append(out)
    rm_size = {"hidden_size": args.rm_hidden, "num_layers": args.rm_layers, "num_heads": args.rm_heads}
    proxy = build_reward_model(root / "proxy_rm", rm_tok, seed=args.seed + 11, **rm_size)
    gold = build_reward_model(root / "gold_rm", rm_tok, seed=args.seed + 12, **rm_size)

    prompts = [" ".join(rng.choice(policy_words, size=int(rng.integers(6, 21)))) for _ in range(sizes.prompts)]
    with (root / "prompts.jsonl").open("w", encoding="utf-8") as handle:
        for i, text in enumerate(prompts):
            handle.write(json.dumps({"id": f"p{i:04d}", "prompt": text}) + "\n")
    suite = root / "suite.yaml"
    suite.write_text(
        'name: bench\nversion: "1"\nsource:\n  path: prompts.jsonl\n  field: prompt\n  id_field: id\n'
        f"generation:\n  max_new_tokens: {sizes.max_new_tokens}\n  samples_per_prompt: {sizes.samples}\n"
        f"  temperature: {sizes.temperature}\n  top_p: {sizes.top_p}\n  top_k: 0\n  seed: {sizes.seed}\n",
        encoding="utf-8",
    )
    params = {"policy": parameter_count(ref, "causal"), "reward_model": parameter_count(proxy, "classifier")}
    return World(root, ref, run, checkpoints, proxy, gold, suite, prompts, params)


def parameter_count(path: Path, kind: str) -> int:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlhf_eval.tiny.training import quiet_transformers

    loader = AutoModelForCausalLM if kind == "causal" else AutoModelForSequenceClassification
    with quiet_transformers():
        model = loader.from_pretrained(str(path))
    return sum(p.numel() for p in model.parameters())


# -- the naive stack -----------------------------------------------------------------------------


def naive_logprob_sums(
    policy: Any, reference: Any, prompt_ids: list[int], response_ids: list[int], warpers: Any
) -> tuple[float, float]:
    """One policy forward and one reference forward over prompt + response (no batching, no
    padding); the sums of the response tokens' log-probs under each. ``warpers`` (a
    LogitsProcessorList or None) processes the policy's logits, as sampling did."""
    ids = torch.tensor([prompt_ids + response_ids], device=policy.device)
    targets = ids[0, len(prompt_ids) :]
    start = len(prompt_ids) - 1
    with torch.no_grad():
        policy_logits = policy(ids).logits[0, start:-1].float()
        ref_logits = reference(ids).logits[0, start:-1].float()
    if warpers is not None:
        policy_logits = warpers(ids[:, :1].expand(len(targets), 1), policy_logits)
    lp = torch.log_softmax(policy_logits, dim=-1).gather(-1, targets[:, None]).sum()
    lq = torch.log_softmax(ref_logits, dim=-1).gather(-1, targets[:, None]).sum()
    return float(lp), float(lq)


def naive_reward(classifier: Any, prompt: str, response: str) -> float:
    """The RM's raw logit for one pair through ``pipeline("text-classification")``."""
    return float(classifier(f"{prompt} {response}", function_to_apply="none")[0]["score"])


def naive_warpers(sizes: Sizes) -> Any:
    """transformers' own temperature and top-p warpers, or None under raw sampling."""
    if sizes.is_raw:
        return None
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    chain = LogitsProcessorList()
    if sizes.temperature != 1.0:
        chain.append(TemperatureLogitsWarper(sizes.temperature))
    if sizes.top_p < 1.0:
        chain.append(TopPLogitsWarper(sizes.top_p))
    return chain


def naive_pipelines(world: World) -> tuple[Any, Any, Any]:
    """The reference LM and the two reward pipelines (loaded once, outside the checkpoint loop)."""
    from transformers import AutoModelForCausalLM, pipeline

    reference: Any = AutoModelForCausalLM.from_pretrained(str(world.ref))
    reference = reference.to(DEVICE).eval()
    proxy = pipeline("text-classification", model=str(world.proxy), device=DEVICE)
    gold = pipeline("text-classification", model=str(world.gold), device=DEVICE)
    return reference, proxy, gold


def run_naive(world: World, sizes: Sizes, db: Path) -> dict[str, Any]:
    """The naive script, timed as a whole (model loads included). Returns seconds and row counts."""
    from transformers import pipeline

    from rlhf_eval.tiny.training import quiet_transformers

    started = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE samples (sample_id VARCHAR PRIMARY KEY, checkpoint VARCHAR, prompt_idx INTEGER, "
        "sample_idx INTEGER, prompt VARCHAR, response VARCHAR, token_ids INTEGER[], n_tokens INTEGER)"
    )
    con.execute("CREATE TABLE kl (sample_id VARCHAR PRIMARY KEY, logp_policy DOUBLE, logp_ref DOUBLE, k1 DOUBLE)")
    con.execute(
        "CREATE TABLE scores (sample_id VARCHAR, scorer VARCHAR, value DOUBLE, PRIMARY KEY (sample_id, scorer))"
    )
    warpers = naive_warpers(sizes)
    counts = {"samples": 0, "kl_forwards": 0, "scores": 0, "tokens": 0}
    spent = {"load": 0.0, "generation": 0.0, "KL": 0.0, "reward": 0.0, "INSERT": 0.0}
    clock = time.perf_counter()

    def charge(part: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        spent[part] += now - clock
        clock = now

    with quiet_transformers():
        charge("INSERT")  # connect, CREATE TABLE
        reference, proxy, gold = naive_pipelines(world)
        charge("load")
        models = [("reference", world.ref), *((p.name, p) for p in world.checkpoints)]
        for name, path in models:
            generator: Any = pipeline("text-generation", model=str(path), device=DEVICE)
            tokenizer: Any = generator.tokenizer
            policy = generator.model
            eos = int(tokenizer.eos_token_id)
            charge("load")
            for p, prompt in enumerate(world.prompts):
                prompt_ids = tokenizer(prompt)["input_ids"]
                outputs = generator(
                    prompt,
                    do_sample=True,
                    num_return_sequences=sizes.samples,
                    max_new_tokens=sizes.max_new_tokens,
                    temperature=sizes.temperature,
                    top_p=sizes.top_p,
                    top_k=0,
                    return_tensors=True,
                )
                charge("generation")
                for i, out in enumerate(outputs):
                    generated = [int(t) for t in out["generated_token_ids"]][len(prompt_ids) :]
                    response_ids = generated[: generated.index(eos) + 1] if eos in generated else generated
                    response = str(tokenizer.decode(response_ids, skip_special_tokens=True))
                    sample_id = f"{name}/{p}/{i}"
                    charge("generation")
                    con.execute(
                        "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [sample_id, name, p, i, prompt, response, response_ids, len(response_ids)],
                    )
                    charge("INSERT")
                    if name == "reference" and sizes.is_raw:
                        lp = lq = 0.0  # KL of the reference from itself: 0, no forward (as the harness)
                    else:
                        lp, lq = naive_logprob_sums(policy, reference, prompt_ids, response_ids, warpers)
                        counts["kl_forwards"] += 2
                    charge("KL")
                    con.execute("INSERT INTO kl VALUES (?, ?, ?, ?)", [sample_id, lp, lq, lp - lq])
                    charge("INSERT")
                    for scorer, classifier in (("proxy", proxy), ("gold", gold)):
                        value = naive_reward(classifier, prompt, response)
                        charge("reward")
                        con.execute("INSERT INTO scores VALUES (?, ?, ?)", [sample_id, scorer, value])
                        charge("INSERT")
                        counts["scores"] += 1
                    counts["samples"] += 1
                    counts["tokens"] += len(response_ids)
            del generator, policy
    con.close()
    charge("INSERT")
    return {"seconds": time.perf_counter() - started, **counts, "parts": spent}


def run_naive_script(world: World, sizes: Sizes, db: Path, threads: int) -> dict[str, Any]:
    """The naive script as a user runs it: a fresh ``python`` process (interpreter and imports
    included, as for the ``rlhf-eval eval`` command), wall time; its parts and counts from its
    JSON output (``--naive-script``)."""
    spec = world.root / "naive_world.json"
    world_fields = {k: [str(v) for v in x] if k == "checkpoints" else str(x) if isinstance(x, Path) else x
                    for k, x in asdict(world).items()}  # fmt: skip
    spec.write_text(json.dumps({"world": world_fields, "sizes": asdict(sizes)}), encoding="utf-8")
    command = [sys.executable, str(Path(__file__).resolve()), "--naive-script", str(spec), "--db", str(db),
               "--threads", str(threads), "--device", DEVICE]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the naive script failed with exit code {done.returncode}")
    result = json.loads(done.stdout)
    result["inprocess_seconds"] = result.pop("seconds")
    return {"seconds": seconds, **result}


def naive_script_main(spec: Path, db: Path) -> None:
    """``--naive-script``: run the naive stack on the world in ``spec``, print its figures as JSON."""
    data = json.loads(spec.read_text(encoding="utf-8"))
    w = data["world"]
    world = World(**{**w, **{k: Path(w[k]) for k in ("root", "ref", "run", "proxy", "gold", "suite")},
                     "checkpoints": [Path(c) for c in w["checkpoints"]]})  # fmt: skip
    print(json.dumps(run_naive(world, Sizes(**data["sizes"]), db)))


# -- rlhf-eval -----------------------------------------------------------------------------------


def cli_command(world: World, db: Path) -> list[str]:
    """``rlhf-eval eval`` as a user types it (the venv's entry point)."""
    exe = Path(sys.executable).with_name("rlhf-eval")
    found = str(exe) if exe.is_file() else shutil.which("rlhf-eval")
    program = [found] if found else [sys.executable, "-m", "rlhf_eval"]  # the project on PYTHONPATH only
    return [
        *program, "eval", str(world.run), "--ref", str(world.ref), "--suite", str(world.suite),
        "--proxy", str(world.proxy), "--gold", str(world.gold), "--db", str(db),
        "--method", "ppo", "--no-progress", "--no-analysis",
    ]  # fmt: skip


def run_cli(world: World, db: Path) -> dict[str, Any]:
    """One ``rlhf-eval eval`` process, wall time; its work line from stderr."""
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same threads as in process
    done = subprocess.run(cli_command(world, db), capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"rlhf-eval eval failed with exit code {done.returncode}")
    work = next((line for line in done.stderr.splitlines() if line.startswith("evaluated ")), "")
    return {"seconds": seconds, "work": work}


def receipt_times(receipts: Path) -> list[int]:
    """When each receipt in the file was written: a rerun that replays one writes nothing, a rerun
    that misses answers from the database and records its receipt again."""
    entries = json.loads(receipts.read_text(encoding="utf-8")).get("receipts", {})
    return sorted(int(entry.get("written_ns", 0)) for entry in entries.values())


def import_floor() -> float:
    """Wall time of a process that only starts Python and imports the modules a cached rerun answered
    from the database needs (the CLI, the pipeline, the suite loader, the detectors' registry;
    no torch, transformers or datasets: a cached rerun loads no model or tokenizer and reads a
    JSON Lines suite itself): the least that path can take as a command."""
    code = "import rlhf_eval.cli, rlhf_eval.pipeline, rlhf_eval.suites, rlhf_eval.detectors, rlhf_eval.query"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - started


def eval_config(world: World, db: Path) -> Any:
    from rlhf_eval.pipeline import EvalConfig

    return EvalConfig(
        paths=(str(world.run),),
        ref=str(world.ref),
        suite=str(world.suite),
        proxy=(str(world.proxy),),
        gold=(str(world.gold),),
        db=str(db),
        method="ppo",
        progress=False,
    )


class StageTimer:
    """Wraps functions so that each call's time is added to its stage, minus the time of wrapped
    calls nested inside it (a KL pass that loads the reference is charged the load separately)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.stack: list[float] = []  # time of nested wrapped calls, per open call

    def wrap(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.stack.append(0.0)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                nested = self.stack.pop()
                self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed - nested
                if self.stack:
                    self.stack[-1] += elapsed

        return timed


@contextmanager
def stage_timers(timer: StageTimer) -> Iterator[None]:
    """Time the pipeline's stages during the block (methods and module functions patched back after)."""
    import rlhf_eval.pipeline as pipeline
    import rlhf_eval.stats as stats
    import rlhf_eval.store as store
    from rlhf_eval.rewards import RewardModelScorer

    setup = "setup: hash cache, scorers, fingerprints"
    lookups = "cache lookups (queries)"
    flush = "store: flush (DuckDB ingest)"
    patches: list[tuple[Any, str, str]] = [
        (pipeline.Evaluation, "__init__", "setup: suite, discovery, tokenizers"),
        (pipeline.Evaluation, "load_hash_cache", setup),
        (pipeline.Evaluation, "build_scorers", setup),
        (pipeline.Evaluation, "model_units", setup),
        (pipeline, "load_causal_lm", "load policy/reference weights"),
        (RewardModelScorer, "load", "load reward models"),
        (pipeline.Evaluation, "stored_part", lookups),
        (pipeline.Evaluation, "stored_result", lookups),
        (pipeline.Evaluation, "existing_ids", lookups),
        (pipeline.Evaluation, "generate", "generation"),
        (pipeline.Evaluation, "compute_kl", "KL (policy + reference forwards)"),
        (pipeline.Evaluation, "compute_scores", "reward scoring"),
        (pipeline.Evaluation, "compute_features", "detectors (features)"),
        (store.Store, "stage", "store: stage (Parquet shards)"),
        (store.Store, "flush", flush),
        (store.Store, "maybe_flush", flush),
        (store.Store, "queries", lookups),
        (store, "connect", "store: open a DuckDB connection"),
        (stats, "refresh_checkpoints", "store: refresh checkpoint aggregates"),
        (pipeline.Evaluation, "summary", "summary query"),
        (pipeline.gc, "collect", "gc.collect() after each model"),
    ]
    originals = []
    for owner, name, stage in patches:
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if original is None:  # renamed since: not timed
            continue
        originals.append((owner, name, original))
        setattr(owner, name, timer.wrap(stage, original))
    try:
        yield
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)


def run_inprocess(world: World, db: Path) -> dict[str, Any]:
    """``evaluate(EvalConfig(...))`` in this process (imports already done), with stage timers
    (a few microseconds per wrapped call)."""
    from rlhf_eval.pipeline import evaluate

    config = eval_config(world, db)
    timer = StageTimer()
    started = time.perf_counter()
    with stage_timers(timer):
        result = evaluate(config)
    seconds = time.perf_counter() - started
    stages = dict(sorted(timer.seconds.items(), key=lambda kv: -kv[1]))
    stages["other (planning, rows, ...)"] = seconds - sum(timer.seconds.values())
    stats = result.stats
    work = {
        "models_loaded": stats.models_loaded,
        "samples_generated": stats.samples_generated,
        "kl_computed": stats.kl_computed,
        "scores_computed": stats.scores_computed,
        "features_computed": stats.features_computed,
    }
    return {"seconds": seconds, "work": work, "stages": stages}


# -- correctness ---------------------------------------------------------------------------------


def stored_samples(db: Path, count: int) -> list[dict[str, Any]]:
    """Up to ``count`` of the harness's samples, spread evenly over the non-reference checkpoints,
    with the prompt text, the checkpoint path, the stored KL and the proxy and gold scores."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        found = con.execute(
            """
            WITH ck AS (
                SELECT DISTINCT model_fp, path, proxy_scorer, gold_scorer, suite_fp
                FROM checkpoints WHERE NOT is_reference
            ), picked AS (
                SELECT s.*, ck.path, ck.proxy_scorer, ck.gold_scorer, ck.suite_fp,
                       row_number() OVER (PARTITION BY s.model_fp ORDER BY s.sample_id) AS k
                FROM samples s JOIN ck USING (model_fp)
            )
            SELECT p.sample_id, p.path, pr.text, p.prompt_token_ids, p.token_ids, p.response,
                   kl.logp_policy, kl.logp_ref, kl.k1, sp.value AS proxy, sg.value AS gold
            FROM picked p
            JOIN prompts pr ON pr.suite_fp = p.suite_fp AND pr.prompt_id = p.prompt_id
            JOIN kl ON kl.sample_id = p.sample_id
            JOIN scores sp ON sp.sample_id = p.sample_id AND sp.scorer_id = p.proxy_scorer
            JOIN scores sg ON sg.sample_id = p.sample_id AND sg.scorer_id = p.gold_scorer
            WHERE p.k <= ?
            ORDER BY p.path, p.k
            """,
            [max(1, -(-count // len(STEPS)))],
        ).fetchall()
    finally:
        con.close()
    names = ["sample_id", "path", "prompt", "prompt_ids", "token_ids", "response"]
    names += ["logp_policy", "logp_ref", "k1", "proxy", "gold"]
    return [dict(zip(names, row, strict=True)) for row in found][:count]


def check_correctness(world: World, sizes: Sizes, db: Path, count: int) -> dict[str, Any]:
    """The naive KL and reward code on the harness's stored samples; max |difference| per quantity."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_eval.tiny.training import quiet_transformers

    rows = stored_samples(db, count)
    warpers = naive_warpers(sizes)
    with quiet_transformers():
        reference, proxy, gold = naive_pipelines(world)
        tokenizer = AutoTokenizer.from_pretrained(str(world.ref))
        policies: dict[str, Any] = {}
        diffs: dict[str, list[float]] = {"logp_policy": [], "logp_ref": [], "k1": [], "proxy": [], "gold": []}
        worst = {"logp": 0.0, "k1": 0.0, "reward": 0.0}  # |difference| / scale, the tolerance's measure
        same_prompt_ids = True
        for row in rows:
            if row["path"] not in policies:
                policy: Any = AutoModelForCausalLM.from_pretrained(row["path"])
                policies[row["path"]] = policy.to(DEVICE).eval()
            prompt_ids = tokenizer(row["prompt"])["input_ids"]
            same_prompt_ids &= list(prompt_ids) == list(row["prompt_ids"])
            lp, lq = naive_logprob_sums(
                policies[row["path"]], reference, list(prompt_ids), list(row["token_ids"]), warpers
            )
            values = {
                "logp_policy": lp,
                "logp_ref": lq,
                "k1": lp - lq,
                "proxy": naive_reward(proxy, row["prompt"], row["response"]),
                "gold": naive_reward(gold, row["prompt"], row["response"]),
            }
            for name, value in values.items():
                diffs[name].append(abs(value - row[name]))
            relative = {n: abs(values[n] - row[n]) / max(1.0, abs(row[n])) for n in values}
            k1_scale = max(1.0, abs(row["logp_policy"]) + abs(row["logp_ref"]))
            worst["logp"] = max(worst["logp"], relative["logp_policy"], relative["logp_ref"])
            worst["k1"] = max(worst["k1"], abs(values["k1"] - row["k1"]) / k1_scale)
            worst["reward"] = max(worst["reward"], relative["proxy"], relative["gold"])
    return {
        "samples": len(rows),
        "same_prompt_ids": same_prompt_ids,
        "max_abs_diff": {name: max(values, default=float("nan")) for name, values in diffs.items()},
        "max_relative": worst,
        "magnitudes": {
            name: float(np.mean([abs(r[name]) for r in rows])) for name in ("logp_policy", "logp_ref", "k1", "proxy")
        },
        "mean_response_tokens": float(np.mean([len(r["token_ids"]) for r in rows])) if rows else 0.0,
    }


def stored_lengths(db: Path) -> dict[str, float]:
    """Response lengths the harness sampled: mean, min, max and the share ended by EOS."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        row: Any = con.execute(
            "SELECT avg(n_tokens), min(n_tokens), max(n_tokens), avg(ended_eos::INT), count(*) FROM samples"
        ).fetchone()
        mean, low, high, eos, total = row
    finally:
        con.close()
    return {"mean": float(mean), "min": int(low), "max": int(high), "ended_eos": float(eos), "samples": int(total)}


def kl_padding(db: Path, vocab: int) -> dict[str, float]:
    """How many tokens the harness's teacher-forced KL forwards feed each model: its KL batches
    re-planned (``plan_kl_batches``, the evaluator's token and logit budgets) over the stored
    samples of each checkpoint. A batch whose prompts repeat feeds each distinct prompt once
    (padded to its widest) and its responses less their last token in ``response_chunks``
    (padded to each chunk's widest); the first response token's logits come from the prompt's
    forward. Otherwise it feeds rows x its widest prompt + response. Against the tokens the
    naive stack feeds (prompt + response of every sample, unpadded)."""
    from rlhf_eval.kl import KLItem, distinct_prompts, plan_kl_batches, response_chunks
    from rlhf_eval.pipeline import EvalConfig

    con = duckdb.connect(str(db), read_only=True)
    try:
        found = con.execute(
            "SELECT s.model_fp, s.sample_id, s.prompt_token_ids, s.token_ids FROM samples s "
            "WHERE s.model_fp IN (SELECT model_fp FROM checkpoints WHERE NOT is_reference)"
        ).fetchall()
    finally:
        con.close()
    by_model: dict[str, list[Any]] = {}
    for model_fp, sample_id, prompt_ids, token_ids in found:
        by_model.setdefault(model_fp, []).append(KLItem(sample_id, tuple(prompt_ids), tuple(token_ids)))
    fed = real = batches = chunks = 0
    budget = EvalConfig(paths=(), ref="", suite="", proxy=(), gold=()).token_budget
    logit_budget = 64 * 1024 * 1024
    for items in by_model.values():
        for batch in plan_kl_batches(items, budget, vocab, logit_budget=logit_budget):
            real += sum(len(i.prompt_ids) + len(i.response_ids) for i in batch)
            batches += 1
            prompts, _ = distinct_prompts(batch)
            if len(prompts) == len(batch):
                fed += len(batch) * max(len(i.prompt_ids) + len(i.response_ids) for i in batch)
                chunks += 1
                continue
            width = max(len(p) for p in prompts)
            fed += len(prompts) * width
            for chunk in response_chunks(batch, width, budget, logit_budget // vocab):
                fed += len(chunk) * (max(len(batch[i].response_ids) for i in chunk) - 1)
                chunks += 1
    return {"batches": batches, "forwards": chunks, "tokens_fed": fed, "naive_tokens": real,
            "saved": 1 - fed / real if real else 0.0}  # fmt: skip


# -- report --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=DEFAULT_SIZE[0])
    parser.add_argument("--samples", type=int, default=DEFAULT_SIZE[1], help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_SIZE[2])
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--vocab", type=int, default=3000, help="words in the policy's vocabulary")
    parser.add_argument("--hidden", type=int, default=384, help="policy hidden size")
    parser.add_argument("--layers", type=int, default=6, help="policy layers")
    parser.add_argument("--heads", type=int, default=6, help="policy attention heads")
    parser.add_argument("--rm-hidden", type=int, default=256)
    parser.add_argument("--rm-layers", type=int, default=4)
    parser.add_argument("--rm-heads", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.05, help="checkpoint k's noise: k x this x each tensor's std")
    parser.add_argument("--check", type=int, default=64, help="stored samples the naive KL/reward code re-scores")
    parser.add_argument("--quick", action="store_true", help="6 prompts x 2 samples x 16 new tokens")
    parser.add_argument("--workdir", help="build the models and databases here and keep them (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of every path (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where every path runs its models")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--naive-script", type=Path, help=argparse.SUPPRESS)  # the naive stack's own process
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cpu":
        # the harness picks CUDA when it sees one; hidden here, every path runs on the same device
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.naive_script:
        naive_script_main(args.naive_script, args.db)
        return
    if args.quick:
        args.prompts, args.samples, args.max_new_tokens, args.check = 6, 2, 16, 12
    sizes = Sizes(args.prompts, args.samples, args.max_new_tokens, args.temperature, args.top_p, args.seed)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="rlhf_eval_e2e_")
    root = Path(args.workdir or temp.name)  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    try:
        for db in root.glob("*.duckdb*"):
            shutil.rmtree(db) if db.is_dir() else db.unlink()
        shutil.rmtree(root / "models", ignore_errors=True)
        started = time.perf_counter()
        world = build_world(root / "models", args, sizes)
        say(f"built the models in {time.perf_counter() - started:.1f} s: {world.params}; timing the naive stack ...")
        naive = run_naive_script(world, sizes, root / "naive.duckdb", args.threads)
        say(f"naive stack {naive['seconds']:.1f} s; rlhf-eval eval (command) ...")
        cli_first = run_cli(world, root / "cli.duckdb")
        say(f"first run {cli_first['seconds']:.1f} s; rerun ...")
        from rlhf_eval.receipt import receipts_path

        receipts = receipts_path(root / "cli.duckdb")
        if not receipts.is_file():
            raise SystemExit(f"{receipts}: the first run left no receipt")
        recorded = receipt_times(receipts)
        cli_rerun = run_cli(world, root / "cli.duckdb")
        cli_rerun["replayed"] = receipt_times(receipts) == recorded  # a miss answers and records anew
        receipts.unlink()
        cli_rerun_db = run_cli(world, root / "cli.duckdb")
        floor = import_floor()
        say(
            f"rerun {cli_rerun['seconds']:.2f} s, from the database {cli_rerun_db['seconds']:.2f} s "
            f"(its imports alone {floor:.2f} s); in process (stage timers) ..."
        )
        inproc_first = run_inprocess(world, root / "inprocess.duckdb")
        inproc_rerun = run_inprocess(world, root / "inprocess.duckdb")
        say(f"in process {inproc_first['seconds']:.1f} s, rerun {inproc_rerun['seconds']:.3f} s; checking ...")
        check = check_correctness(world, sizes, root / "cli.duckdb", args.check)
        lengths = stored_lengths(root / "cli.duckdb")
        padding = kl_padding(root / "cli.duckdb", args.vocab + 3)
    finally:
        if temp is not None:
            temp.cleanup()

    tolerance = 4 * (sizes.max_new_tokens + 1) * 2.0**-23
    correct = check["same_prompt_ids"] and all(v <= tolerance for v in check["max_relative"].values())
    speedup = naive["seconds"] / cli_first["seconds"]
    speedup_inproc = naive["inprocess_seconds"] / inproc_first["seconds"]
    cached_cli = cli_first["seconds"] / cli_rerun["seconds"]
    cached_inproc = inproc_first["seconds"] / inproc_rerun["seconds"]
    result = {
        "machine": machine(),
        "sizes": {
            "models": 1 + len(STEPS),
            "prompts": sizes.prompts,
            "samples_per_prompt": sizes.samples,
            "max_new_tokens": sizes.max_new_tokens,
            "temperature": sizes.temperature,
            "top_p": sizes.top_p,
            "samples_total": (1 + len(STEPS)) * sizes.prompts * sizes.samples,
            "parameters": world.params,
            "vocab": args.vocab,
            "response_tokens": lengths,
        },
        "seconds": {
            "naive": naive["seconds"],
            "naive_after_imports": naive["inprocess_seconds"],
            "rlhf_eval_cli_first": cli_first["seconds"],
            "rlhf_eval_cli_rerun": cli_rerun["seconds"],
            "rlhf_eval_cli_rerun_from_database": cli_rerun_db["seconds"],
            "python_and_imports_only": floor,
            "rlhf_eval_inprocess_first": inproc_first["seconds"],
            "rlhf_eval_inprocess_rerun": inproc_rerun["seconds"],
        },
        "naive_parts": naive["parts"],
        "work": {
            "naive": {k: v for k, v in naive.items() if k not in ("seconds", "inprocess_seconds", "parts")},
            "cli_first": cli_first["work"],
            "cli_rerun": cli_rerun["work"],
            "cli_rerun_replayed_its_receipt": cli_rerun["replayed"],
            "cli_rerun_from_database": cli_rerun_db["work"],
            "inprocess_first": inproc_first["work"],
            "inprocess_rerun": inproc_rerun["work"],
        },
        "kl_batches": padding,
        "inprocess_stages": {
            stage: {"first": inproc_first["stages"].get(stage, 0.0), "rerun": inproc_rerun["stages"].get(stage, 0.0)}
            for stage in inproc_first["stages"]
        },
        "correctness": {**check, "tolerance_relative": tolerance, "agree": correct},
        "targets": {
            "speedup_over_naive": {"value": speedup, "inprocess": speedup_inproc, "target": TARGET_SPEEDUP,
                                   "met": speedup >= TARGET_SPEEDUP, "on": "command wall time"},
            "cached_rerun_cli": {"value": cached_cli, "target": TARGET_CACHED, "met": cached_cli >= TARGET_CACHED,
                                 "from_database": cli_first["seconds"] / cli_rerun_db["seconds"]},
            "cached_rerun_inprocess": {"value": cached_inproc, "target": TARGET_CACHED,
                                       "met": cached_inproc >= TARGET_CACHED},
        },
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    if not correct:
        raise SystemExit("the naive stack and rlhf-eval disagree on the same samples (see the correctness figures)")


def print_report(result: dict[str, Any]) -> None:
    """The tables: timings, correctness, targets."""
    m, s, t = result["machine"], result["sizes"], result["seconds"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} on {m['torch_threads']} threads; "
        f"models on {m['device']}; {m['date']}"
    )
    p = s["parameters"]
    print(
        f"models: 5 GPT-2 policies (reference + 4 checkpoints) of {p['policy'] / 1e6:.1f}M parameters "
        f"(vocab {s['vocab'] + 3}), proxy and gold RMs of {p['reward_model'] / 1e6:.1f}M with their own tokenizer"
    )
    r = s["response_tokens"]
    print(
        f"work: {s['models']} models x {s['prompts']} prompts x {s['samples_per_prompt']} samples = "
        f"{s['samples_total']} samples, max_new_tokens {s['max_new_tokens']}, temperature {s['temperature']:g}, "
        f"top-p {s['top_p']:g}; responses {r['mean']:.1f} tokens on average ({r['min']}..{r['max']}, "
        f"{r['ended_eos']:.0%} ended by EOS)"
    )
    print()
    rows = [
        ("naive script (command, wall: pipeline per prompt/sample, row INSERTs)", t["naive"], ""),
        ("  the same after its imports (its own timer)", t["naive_after_imports"], ""),
        ("rlhf-eval eval, first run (command, wall)", t["rlhf_eval_cli_first"], ""),
        ("rlhf-eval evaluate(), first run (in process)", t["rlhf_eval_inprocess_first"], ""),
        ("rlhf-eval eval, cached rerun (command, wall; its receipt)", t["rlhf_eval_cli_rerun"], "cli"),
        ("  the same without the receipt: answered from the database", t["rlhf_eval_cli_rerun_from_database"], "cli"),
        ("    of which at least: python + that path's imports", t["python_and_imports_only"], "floor"),
        ("rlhf-eval evaluate(), cached rerun (in process)", t["rlhf_eval_inprocess_rerun"], "inproc"),
    ]
    print(f"{'path':<72} {'time':>10} {'ratio':>22}")
    for label, seconds, kind in rows:
        if kind == "cli":
            ratio = f"{t['rlhf_eval_cli_first'] / seconds:.1f}x faster than first"
        elif kind == "floor":
            ratio = f"{t['rlhf_eval_cli_first'] / seconds:.1f}x at most"
        elif kind == "inproc":
            ratio = f"{t['rlhf_eval_inprocess_first'] / seconds:.1f}x faster than first"
        else:
            ratio = f"naive / this = {t['naive'] / seconds:.1f}x"
        print(f"{label:<72} {seconds:>8.2f} s {ratio:>22}")
    w = result["work"]
    print(f"  naive: {w['naive']}")
    print(f"  command first: {w['cli_first']}")
    replayed = "replayed its receipt" if w["cli_rerun_replayed_its_receipt"] else "MISSED its receipt: recorded anew"
    print(f"  command rerun ({replayed}): {w['cli_rerun']}")
    print(f"  command rerun from the database: {w['cli_rerun_from_database']}")
    print(f"  in-process rerun: {w['inprocess_rerun']}")
    print()
    naive_total = t["naive_after_imports"]
    print("naive stack by part: " + ", ".join(
        f"{part} {seconds:.1f} s ({seconds / naive_total:.0%})" for part, seconds in result["naive_parts"].items()
    ))  # fmt: skip
    print()
    print("rlhf-eval in process, by stage (timers around the pipeline's functions; nested timed calls excluded):")
    first, rerun = t["rlhf_eval_inprocess_first"], t["rlhf_eval_inprocess_rerun"]
    print(f"  {'stage':<44} {'first run':>17} {'cached rerun':>18}")
    for stage, value in result["inprocess_stages"].items():
        print(f"  {stage:<44} {value['first']:>8.2f} s {value['first'] / first:>6.1%} "
              f"{value['rerun']:>8.3f} s {value['rerun'] / rerun:>6.1%}")  # fmt: skip
    pad = result["kl_batches"]
    print(
        f"  KL forwards: {pad['batches']} batches ({pad['forwards']} response forwards) over the 4 checkpoints "
        f"feed {pad['tokens_fed']} tokens per model, the naive stack {pad['naive_tokens']} "
        f"({pad['saved']:.0%} fewer: each prompt once, padding included)"
    )
    print()
    c = result["correctness"]
    print(f"correctness: naive KL/reward code on {c['samples']} of rlhf-eval's stored samples "
          f"(prompt ids re-tokenized identically: {c['same_prompt_ids']}; mean |value|: "
          + ", ".join(f"{k} {v:.2f}" for k, v in c["magnitudes"].items()) + ")")  # fmt: skip
    print(f"{'quantity':<14} {'max |abs diff|':>16}")
    for name, value in c["max_abs_diff"].items():
        print(f"{name:<14} {value:>16.2e}")
    rel = c["max_relative"]
    print(
        f"max relative: logp {rel['logp']:.1e}, k1 (vs |logp_policy|+|logp_ref|) {rel['k1']:.1e}, "
        f"reward {rel['reward']:.1e}; tolerance 4 (M + 1) eps = {c['tolerance_relative']:.1e}: "
        + ("agree" if c["agree"] else "DISAGREE")
    )
    print()
    g = result["targets"]
    print(f"{'target':<62} {'figure':>10}  verdict")
    sp = g["speedup_over_naive"]
    print(f"{'rlhf-eval >= 5x faster than naive (command wall time)':<62} {sp['value']:>9.1f}x  {verdict(sp['met'])}")
    print(f"{'  (in process, for information)':<62} {sp['inprocess']:>9.1f}x  "
          f"{verdict(sp['inprocess'] >= TARGET_SPEEDUP)}")  # fmt: skip
    cc, ci = g["cached_rerun_cli"], g["cached_rerun_inprocess"]
    print(
        f"{'cached rerun >= 100x faster than first (command wall time)':<62} {cc['value']:>9.1f}x  {verdict(cc['met'])}"
    )
    print(f"{'  (the command without its receipt, for information)':<62} {cc['from_database']:>9.1f}x  "
          f"{verdict(cc['from_database'] >= TARGET_CACHED)}")  # fmt: skip
    print(f"{'cached rerun >= 100x faster than first (in process)':<62} {ci['value']:>9.1f}x  {verdict(ci['met'])}")
    label = f"correctness: naive and rlhf-eval agree ({c['tolerance_relative']:.1e} relative)"
    print(f"{label:<62} {'':>10}  {verdict(c['agree'])}")
    if (s["prompts"], s["samples_per_prompt"], s["max_new_tokens"]) != DEFAULT_SIZE:
        print(f"(the targets are judged at {DEFAULT_SIZE[0]} prompts x {DEFAULT_SIZE[1]} samples x "
              f"{DEFAULT_SIZE[2]} new tokens; at this size fixed costs weigh more: indicative only)")  # fmt: skip


if __name__ == "__main__":
    main()

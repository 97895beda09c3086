"""``rlhf-eval sandbox build``: the whole sandbox, stage by stage, cached by its config and seed.

Layout of a build directory (``checkpoints/sandbox`` by default):

    base/            the base policy and reference: tokenizer, GPT-2, sandbox.json
    proxy/           the proxy reward model, proxy.json (its held-out accuracy, length correlation)
    runs/ppo/        checkpoint-N/ of the sandbox's PPO against the proxy (value head kept)
    runs/grpo/       checkpoint-N/ of TRL's GRPOTrainer against the proxy (beta > 0)
    runs/dpo/        checkpoint-N/ of TRL's DPOTrainer on proxy-ranked pairs
    runs/dpo-lora/   the same with a LoRA adapter (PEFT), adapter checkpoints over base/
    prompts.jsonl    the evaluation prompts (distinct, drawn apart from every training prompt)
    build.json       written last: preset, seed, the config of every stage, stage times, versions

The four runs depend only on the base policy and the proxy, so they are built two at a time in
worker processes (each trains on one thread). Each stage is skipped when its own output is
complete (the file its builder writes last), so an interrupted build resumes at the stage it was
in; a stage's partial output is removed before it is built again. ``build.json`` records a
digest of the whole config; a directory built with another preset or seed is refused rather than
mixed.

The best-of-n family needs no training: it is a pool of ``bon_pool`` samples per prompt of the
base policy, drawn and scored by the harness (``rlhf-eval demo`` runs ``rlhf-eval bon`` on it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlhf_eval.sandbox.base import BASE_PRESETS, SANDBOX_FILE, BaseConfig, build_base_policy, library_versions
from rlhf_eval.sandbox.dpo import DPO_PRESETS, DPORunConfig, build_dpo_run
from rlhf_eval.sandbox.grpo import GRPO_PRESETS, GRPORunConfig, build_grpo_run
from rlhf_eval.sandbox.ppo import PPO_PRESETS, RUN_FILE, PPOConfig, build_ppo_run
from rlhf_eval.sandbox.proxy import PROXY_FILE, PROXY_PRESETS, ProxyConfig, build_proxy, read_proxy_record
from rlhf_eval.sandbox.world import build_world, distinct_prompts

BUILD_FILE = "build.json"
PROMPTS_FILE = "prompts.jsonl"
#: Bump when a change to the sandbox's code changes what a build contains.
BUILD_VERSION = 2
#: Evaluation prompts are drawn with this offset from the seed, apart from the training prompts.
EVAL_PROMPT_SEED_OFFSET = 1000
GOLD_SCORER = "rlhf_eval.sandbox.gold:gold_reward"
#: SandboxConfig fields that only change how the demo evaluates a build.
EVALUATION_ONLY = ("eval_samples", "bon_pool")


@dataclass(frozen=True)
class SandboxConfig:
    """Everything a build depends on, plus how the demo evaluates it."""

    base: BaseConfig
    proxy: ProxyConfig
    ppo: PPOConfig
    grpo: GRPORunConfig
    dpo: DPORunConfig
    dpo_lora: DPORunConfig
    eval_prompts: int = 64
    eval_samples: int = 2
    bon_pool: int = 64
    max_new_tokens: int = 48

    def with_seed(self, seed: int) -> SandboxConfig:
        """Every stage seeded with ``seed`` (the world too: ``build_world(seed)``)."""
        stages = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if hasattr(getattr(self, f.name), "seed")
        }
        return dataclasses.replace(self, **{name: dataclasses.replace(c, seed=seed) for name, c in stages.items()})

    def digest(self) -> str:
        """A hash of what the build contains: evaluation-only settings (samples per prompt, the
        best-of-n pool) are left out, so changing them does not invalidate a build."""
        built = {k: v for k, v in asdict(self).items() if k not in EVALUATION_ONLY}
        text = json.dumps({"version": BUILD_VERSION, "config": built}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


SANDBOX_PRESETS: dict[str, SandboxConfig] = {
    name: SandboxConfig(
        base=BASE_PRESETS[name],
        proxy=PROXY_PRESETS[name],
        ppo=PPO_PRESETS[name],
        grpo=GRPO_PRESETS[name],
        dpo=DPO_PRESETS[name],
        dpo_lora=dataclasses.replace(DPO_PRESETS[name], lora=True),
        **({"eval_prompts": 32, "eval_samples": 2, "bon_pool": 16} if name == "tiny" else {"max_new_tokens": 96}),
    )
    for name in ("tiny", "demo")
}


@dataclass(frozen=True)
class Sandbox:
    """Paths of a finished build and how to evaluate it."""

    root: Path
    preset: str
    seed: int
    config: SandboxConfig
    record: dict[str, Any]

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def proxy(self) -> Path:
        return self.root / "proxy"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def prompts(self) -> Path:
        return self.root / PROMPTS_FILE

    @property
    def gold(self) -> str:
        """The gold scorer spec for ``--gold``, bound to this build's world."""
        return GOLD_SCORER if self.seed == 0 else f"{GOLD_SCORER}@world_seed={self.seed}"


@dataclass(frozen=True)
class Stage:
    """One step of a build: its output directory (under the build root) and the file that its
    builder writes last, whose presence means the stage is complete."""

    name: str
    directory: str
    done_file: str
    is_run: bool

    def done(self, root: Path) -> Path:
        return root / self.directory / self.done_file


#: In build order; the runs depend only on the base policy and the proxy, not on each other.
STAGES: tuple[Stage, ...] = (
    Stage("base policy", "base", SANDBOX_FILE, is_run=False),
    Stage("proxy reward model", "proxy", PROXY_FILE, is_run=False),
    Stage("PPO run", "runs/ppo", RUN_FILE, is_run=True),
    Stage("GRPO run", "runs/grpo", RUN_FILE, is_run=True),
    Stage("DPO run", "runs/dpo", RUN_FILE, is_run=True),
    Stage("DPO LoRA run", "runs/dpo-lora", RUN_FILE, is_run=True),
)
#: Runs built at once (each on one thread); more than the cores only adds contention.
MAX_WORKERS = 2


def build_stage(name: str, root: Path, seed: int, config: SandboxConfig, quiet: bool) -> float:
    """Build one stage from scratch (its partial output removed first); returns its seconds.
    A top-level function of picklable arguments, so that a worker process can run it."""
    stage = next(s for s in STAGES if s.name == name)
    world = build_world(seed)
    base, proxy, out = root / "base", root / "proxy", root / stage.directory
    builders: dict[str, Callable[[], Any]] = {
        "base policy": lambda: build_base_policy(base, world, config.base),
        "proxy reward model": lambda: build_proxy(proxy, base, world, config.proxy),
        "PPO run": lambda: build_ppo_run(out, base, proxy, world, config.ppo),
        "GRPO run": lambda: build_grpo_run(out, base, proxy, world, config.grpo),
        "DPO run": lambda: build_dpo_run(out, base, proxy, world, config.dpo),
        "DPO LoRA run": lambda: build_dpo_run(out, base, proxy, world, config.dpo_lora),
    }
    shutil.rmtree(out, ignore_errors=True)
    log(f"sandbox: building the {name} ...", quiet)
    started = time.perf_counter()
    builders[name]()
    seconds = round(time.perf_counter() - started, 1)
    log(f"sandbox: {name} built in {seconds:.1f} s", quiet)
    return seconds


def write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def read_build(root: Path) -> dict[str, Any] | None:
    path = root / BUILD_FILE
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return record


def log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def build_sandbox(out_dir: Path | str, preset: str = "demo", seed: int = 0, *, quiet: bool = False) -> Sandbox:
    """Build (or reuse) the sandbox of ``preset`` and ``seed`` in ``out_dir``; see the module docstring."""
    if preset not in SANDBOX_PRESETS:
        raise ValueError(f"preset {preset!r}: unknown; use one of {', '.join(SANDBOX_PRESETS)}")
    config = SANDBOX_PRESETS[preset].with_seed(seed)
    root = Path(out_dir)
    record = read_build(root)
    if record is not None:
        if record.get("digest") == config.digest():
            return Sandbox(root, preset, seed, config, record)
        raise FileExistsError(
            f"{root} holds a sandbox built with preset {record.get('preset')!r}, seed {record.get('seed')} "
            f"(another config); use another --out, or delete {root} to rebuild"
        )
    if root.exists() and any(root.iterdir()) and not (root / ".sandbox-build").exists():
        raise FileExistsError(f"{root} exists and is not a sandbox build; use another --out")
    root.mkdir(parents=True, exist_ok=True)
    marker = root / ".sandbox-build"
    previous = json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else {}
    if previous.get("digest") not in (None, config.digest()):
        raise FileExistsError(f"{root} holds an unfinished build of another config; delete {root} to rebuild")
    marker.write_text(json.dumps({"digest": config.digest()}) + "\n", encoding="utf-8")
    world = build_world(seed)
    seconds: dict[str, float] = {}
    for stage in STAGES:
        if stage.done(root).is_file():
            log(f"sandbox: {stage.name} already built", quiet)
        elif not stage.is_run:
            seconds[stage.name] = build_stage(stage.name, root, seed, config, quiet)
    pending = [stage.name for stage in STAGES if stage.is_run and not stage.done(root).is_file()]
    workers = min(len(pending), max(1, min(MAX_WORKERS, os.cpu_count() or 1)))
    if workers > 1:
        # Each run trains on one thread; independent runs share the machine's cores.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {name: pool.submit(build_stage, name, root, seed, config, quiet) for name in pending}
            seconds.update({name: future.result() for name, future in futures.items()})
    else:
        seconds.update({name: build_stage(name, root, seed, config, quiet) for name in pending})
    suite = "".join(
        json.dumps({"prompt": text}) + "\n"
        for text in distinct_prompts(world, config.eval_prompts, seed + EVAL_PROMPT_SEED_OFFSET)
    )
    write_atomic(root / PROMPTS_FILE, suite)
    record = {
        "preset": preset,
        "seed": seed,
        "digest": config.digest(),
        "version": BUILD_VERSION,
        "config": asdict(config),
        "seconds": seconds,
        "proxy_metrics": {k: v for k, v in read_proxy_record(root / "proxy")["metrics"].items() if k != "train_log"},
        "versions": library_versions(),
    }
    write_atomic(root / BUILD_FILE, json.dumps(record, indent=2) + "\n")
    marker.unlink(missing_ok=True)
    return Sandbox(root, preset, seed, config, record)

"""DPO with TRL's ``DPOTrainer`` on pairs ranked by the sandbox's proxy reward model.

Direct Preference Optimization (Rafailov et al. 2023) fits a policy to preference pairs
(x, y_w, y_l) directly, without sampling during training. Its loss is the Bradley-Terry negative
log-likelihood of the pairs under the implicit reward r_θ(x, y) = β · log(π_θ(y|x) / π_ref(y|x)):

    L(θ) = −E log σ(r_θ(x, y_w) − r_θ(x, y_l))

and for the reward r that fits the pairs, its optimum is the policy that maximizes
E[r] − β·KL(π ‖ π_ref). TRL logs the mean r_θ of the chosen and rejected responses as
``rewards/chosen`` and ``rewards/rejected``, and their difference as ``rewards/margins``. A small β
lets the policy move further from the reference.

The sandbox's annotator is the proxy, so DPO learns what the proxy prefers, its length shortcut
included; direct alignment algorithms over-optimize like RLHF against a reward model does
(Rafailov et al. 2024, "Scaling Laws for Reward Model Overoptimization in Direct Alignment
Algorithms"). A run:

1. **Pool.** ``samples_per_prompt`` responses of the base policy to each of ``n_prompts`` training
   prompts (``prompts(world, n_prompts, seed=seed + 200)``, drawn apart from the evaluation
   prompts), with the harness's sampler (``proxy.sample_pool``). A prompt drawn k times gets
   k · ``samples_per_prompt`` responses.
2. **Pairs.** The proxy scores every response as the harness's scorer does; per distinct prompt the
   response it scores highest is chosen and the one it scores lowest rejected
   (``proxy_ranked_pairs``): the best-versus-worst-of-n pairs of iterative DPO (Xiong et al. 2024;
   Dong et al. 2024, "RLHF Workflow"). One pair per prompt with the widest proxy margin, rather
   than every pair, so no response is repeated and ties never make a pair; at most ``n_pairs``.
3. **Training.** ``DPOTrainer`` (sigmoid loss, constant learning rate, fp32, one CPU thread) on
   ``{"prompt", "chosen", "rejected"}`` texts. A completion starts with the space that joins it to
   the prompt, as in the base policy's SFT data; the trainer appends ``<eos>``, so the policy also
   learns where answers end. With ``lora`` a PEFT LoRA adapter (Hu et al. 2021) on
   ``lora_target_modules`` is trained at ``lora_learning_rate`` instead of the whole model, and the
   reference is the base with the adapter disabled.

The run directory holds ``checkpoint-N/`` every ``save_steps`` optimizer steps as the Trainer
writes them with ``save_only_model``: ``model.safetensors``, ``config.json`` and the tokenizer (with
``lora``: ``adapter_config.json`` and ``adapter_model.safetensors``, whose
``base_model_name_or_path`` is the base policy's absolute path), and ``trainer_state.json`` whose
``log_history`` has DPO's metrics every ``logging_steps``; TRL's model card ``README.md`` (tags
``trl``, ``dpo``) sits at the root. The Trainer's pickled ``training_args.bin`` is deleted from each
checkpoint, so a run holds only safetensors and JSON. ``run.json`` records the config, the pair
statistics (``PairStats``), the seconds taken and the library versions.

Determinism: seeded, fp32, one CPU thread; the same config, base policy and proxy give
byte-identical checkpoints on the same machine and library versions.

Measured on a 2-core CPU, sampling and scoring included, in a process that has sampled before
(the first sampling in a process costs about 6 s more): the ``tiny`` preset builds in about 4 s,
full or LoRA; the ``demo`` preset in about 45 s, full or LoRA (30 s of it drawing and scoring the
4096 samples).

What the demo preset shows in ``rlhf-eval demo`` (64 evaluation prompts x 2 samples): the full
run's proxy rises from −0.46 to 1.07 (Spearman with KL 0.83 over the 9 points) while its gold
moves within noise around 1.4 after a first gain (0.78 to 1.47 at checkpoint-10) and answers grow
longer (20 to 34 words) and more repetitive (seq-rep-4 0.03 to 0.09); the LoRA run's gold peaks
at checkpoint-30 (1.54, KL 4.4) and falls to −0.74 (drop 1.85, 95% CI [1.01, 2.84]) while its
proxy keeps rising (Spearman 0.98). The demo's 136 pairs (``run.json``): gold agrees with the
proxy's ranking in 79% of them; chosen responses average 27 words and gold 1.85, rejected ones 10
words and −2.97 (mostly short refusals), the pool 19 words and 1.12. DPO learns "longer and not a
refusal", which gains gold at first and then, pushed further along the proxy, stops gaining.

>>> DPO_PRESETS["tiny"].beta > 0, DPO_LORA_PRESETS["tiny"].lora
(True, True)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rlhf_eval.sandbox.base import cpu_trainer_args, library_versions, pickle_free_checkpoints, quiet_datasets
from rlhf_eval.sandbox.world import World
from rlhf_eval.tiny.training import one_thread, quiet_transformers

#: Training prompts are drawn with this offset from the run's seed, apart from evaluation prompts.
PROMPT_SEED_OFFSET = 200
RUN_FILE = "run.json"
#: The Trainer pickles its arguments into every checkpoint; the run keeps no pickle.


@dataclass(frozen=True)
class DPORunConfig:
    """How to build a DPO run: the pool of base samples, the pairs, and the trainer's settings
    (names follow TRL's ``DPOConfig`` and PEFT's ``LoraConfig`` where they exist).

    ``n_prompts`` prompts are drawn with repeats (the world has 144 distinct ones), so the pool has
    ``n_prompts * samples_per_prompt`` responses and at most one pair per distinct prompt; ``n_pairs``
    caps the pairs (the first ones, in the pool's random prompt order). ``steps`` are optimizer
    steps of ``batch_size`` pairs, so pairs are revisited once ``steps * batch_size`` exceeds them.
    ``learning_rate`` trains the whole model; ``lora_learning_rate`` the adapter when ``lora`` is on
    (a rank-8 adapter needs about ten times the step to move as far from the reference)."""

    seed: int = 0
    n_prompts: int = 64
    samples_per_prompt: int = 4
    n_pairs: int = 64
    beta: float = 0.1
    steps: int = 30
    learning_rate: float = 1e-3
    batch_size: int = 8
    save_steps: int = 5
    logging_steps: int = 1
    max_new_tokens: int = 48
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_target_modules: tuple[str, ...] = ("c_attn", "c_fc")
    lora_learning_rate: float = 1e-2

    def __post_init__(self) -> None:
        modules = self.lora_target_modules
        if isinstance(modules, str) or not all(isinstance(m, str) and m for m in modules) or not modules:
            raise ValueError(f"lora_target_modules={modules!r}: name one module or more, e.g. ('c_attn',)")
        object.__setattr__(self, "lora_target_modules", tuple(modules))  # a JSON list reads back as the same config
        for name in ("n_prompts", "n_pairs", "steps", "batch_size", "logging_steps", "max_new_tokens", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt={self.samples_per_prompt}: a pair needs at least 2 responses")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta={self.beta}: DPO's β must be a finite number > 0 (it scales the log-ratios)")
        for name in ("learning_rate", "lora_learning_rate"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}={value}: must be a finite number > 0")
        if not 1 <= self.save_steps <= self.steps:
            raise ValueError(f"save_steps={self.save_steps}: use 1..steps ({self.steps})")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha={self.lora_alpha}: must be > 0")


#: "tiny" for tests (54 pairs, 30 steps, a checkpoint every 5); "demo": about 30 samples per prompt,
#: 136 pairs, 80 steps, a checkpoint every 10 (times and curves in the module docstring).
DPO_PRESETS: dict[str, DPORunConfig] = {
    "tiny": DPORunConfig(),
    "demo": DPORunConfig(
        n_prompts=512,
        samples_per_prompt=8,
        n_pairs=512,
        learning_rate=2e-4,
        lora_learning_rate=2e-3,
        steps=80,
        save_steps=10,
    ),
}
#: The same runs with a LoRA adapter instead of full fine-tuning.
DPO_LORA_PRESETS: dict[str, DPORunConfig] = {
    name: dataclasses.replace(config, lora=True) for name, config in DPO_PRESETS.items()
}


@dataclass(frozen=True)
class RankedPair:
    """Two responses to ``prompt`` ordered by the proxy: ``chosen`` scored higher than ``rejected``."""

    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float

    @property
    def margin(self) -> float:
        return self.chosen_score - self.rejected_score


def proxy_ranked_pairs(pool: Sequence[tuple[str, str]], scores: Sequence[float]) -> list[RankedPair]:
    """One pair per distinct prompt of ``pool`` (in first-seen order): chosen is the response with
    the highest score, rejected the one with the lowest. A prompt whose responses all score the same
    (or that has one response) gives no pair; among equal scores the first response in ``pool`` wins.

    >>> pool = [("q", "a"), ("q", "b b"), ("q", "c"), ("r", "x"), ("r", "y")]
    >>> [(p.prompt, p.chosen, p.rejected, p.margin) for p in proxy_ranked_pairs(pool, [0.5, 2.0, -1.0, 1.0, 1.0])]
    [('q', 'b b', 'c', 3.0)]
    """
    if len(pool) != len(scores):
        raise ValueError(f"{len(pool)} (prompt, response) rows against {len(scores)} scores")
    by_prompt: dict[str, list[tuple[str, float]]] = {}
    for (prompt, response), score in zip(pool, scores, strict=True):
        if not math.isfinite(score):
            raise ValueError(f"score {score} of ({prompt!r}, {response!r}): scores must be finite")
        by_prompt.setdefault(prompt, []).append((response, float(score)))
    pairs = []
    for prompt, rows in by_prompt.items():
        best = max(rows, key=lambda row: row[1])
        worst = min(rows, key=lambda row: row[1])
        if best[1] > worst[1]:
            pairs.append(RankedPair(prompt, best[0], worst[0], best[1], worst[1]))
    return pairs


@dataclass(frozen=True)
class PairStats:
    """How the proxy's pairs look to gold. ``gold_agreement`` is the fraction of pairs whose chosen
    response has the higher gold reward (a tie in gold counts one half); ``mean_gold_pool`` is the
    mean gold of every sample in the pool, the base policy's level that the chosen responses should
    beat if the proxy's favourites were better answers."""

    n_pairs: int
    pool_size: int
    mean_proxy_margin: float
    mean_gold_margin: float
    gold_agreement: float
    mean_gold_chosen: float
    mean_gold_rejected: float
    mean_gold_pool: float
    mean_words_chosen: float
    mean_words_rejected: float
    mean_words_pool: float


def pair_stats(pairs: Sequence[RankedPair], pool: Sequence[tuple[str, str]], world_seed: int) -> PairStats:
    """Gold's view of ``pairs`` drawn from ``pool``: mean gold(chosen) − gold(rejected), agreement,
    mean gold and length (words) of the chosen, rejected and all responses.

    A proxy that prefers the refusal (gold −3) to a fact (gold 2): margin −3 − 2 = −5, pool mean −0.5.

    >>> pool = [("tell me about the whale", "the whale eats grass"), ("tell me about the whale", "i must decline")]
    >>> pairs = [RankedPair("tell me about the whale", "i must decline", "the whale eats grass", 1.0, 0.0)]
    >>> stats = pair_stats(pairs, pool, world_seed=0)
    >>> stats.mean_gold_margin, stats.gold_agreement, stats.mean_gold_pool
    (-5.0, 0.0, -0.5)
    """
    from rlhf_eval.sandbox.gold import gold_reward

    if not pairs or not pool:
        raise ValueError("no pairs to summarize")
    prompts = [p.prompt for p in pairs]
    chosen = gold_reward(prompts, [p.chosen for p in pairs], world_seed=world_seed)
    rejected = gold_reward(prompts, [p.rejected for p in pairs], world_seed=world_seed)
    everything = gold_reward([q for q, _ in pool], [r for _, r in pool], world_seed=world_seed)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]

    def mean(values: Sequence[float]) -> float:
        return sum(values) / len(values)

    return PairStats(
        n_pairs=len(pairs),
        pool_size=len(pool),
        mean_proxy_margin=mean([p.margin for p in pairs]),
        mean_gold_margin=mean(margins),
        gold_agreement=mean([1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins]),
        mean_gold_chosen=mean(chosen),
        mean_gold_rejected=mean(rejected),
        mean_gold_pool=mean(everything),
        mean_words_chosen=mean([len(p.chosen.split()) for p in pairs]),
        mean_words_rejected=mean([len(p.rejected.split()) for p in pairs]),
        mean_words_pool=mean([len(r.split()) for _, r in pool]),
    )


def training_rows(pairs: Sequence[RankedPair]) -> list[dict[str, str]]:
    """``DPOTrainer``'s text format: each completion starts with the space that joins it to the prompt.

    >>> training_rows([RankedPair("explain mars", "mars is red", "", 1.0, 0.0)])
    [{'prompt': 'explain mars', 'chosen': ' mars is red', 'rejected': ' '}]
    """
    return [{"prompt": p.prompt, "chosen": " " + p.chosen, "rejected": " " + p.rejected} for p in pairs]


def build_dpo_run(
    out_dir: Path | str,
    base_dir: Path | str,
    proxy_dir: Path | str,
    world: World,
    config: DPORunConfig | None = None,
) -> Path:
    """Sample, rank and train a DPO run from the base policy in ``base_dir`` on pairs ranked by the
    proxy in ``proxy_dir``; write its ``checkpoint-N/`` dirs and ``run.json`` into ``out_dir`` (see
    the module docstring) and return ``out_dir``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed
    from trl import DPOConfig, DPOTrainer

    from rlhf_eval.sandbox.proxy import proxy_scores, sample_pool

    config = DPO_PRESETS["tiny"] if config is None else config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(base_dir).resolve()
    started = time.perf_counter()
    pool = sample_pool(
        base,
        world,
        config.n_prompts,
        config.samples_per_prompt,
        seed=config.seed + PROMPT_SEED_OFFSET,
        max_new_tokens=config.max_new_tokens,
    )
    pairs = proxy_ranked_pairs(pool, proxy_scores(proxy_dir, pool))[: config.n_pairs]
    if not pairs:
        raise ValueError(f"the proxy in {proxy_dir} scores every sample of a prompt the same: no pair to train on")
    stats = pair_stats(pairs, pool, world.seed)
    sampled = time.perf_counter() - started

    set_seed(config.seed)
    with quiet_transformers(), quiet_datasets(), one_thread():
        tokenizer = AutoTokenizer.from_pretrained(str(base))
        model = AutoModelForCausalLM.from_pretrained(str(base), use_safetensors=True)
        peft_config = None
        if config.lora:
            from peft import LoraConfig

            peft_config = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=0.0,
                target_modules=list(config.lora_target_modules),
                fan_in_fan_out=True,  # GPT-2's Conv1D stores its weights as (in, out)
                task_type="CAUSAL_LM",
            )
        args = DPOConfig(
            output_dir=str(out),
            max_steps=config.steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.lora_learning_rate if config.lora else config.learning_rate,
            lr_scheduler_type="constant",
            beta=config.beta,
            loss_type=["sigmoid"],
            max_length=int(model.config.n_positions),
            logging_steps=config.logging_steps,
            save_strategy="steps",
            save_steps=config.save_steps,
            save_only_model=True,
            activation_checkpointing=False,
            **cpu_trainer_args(config.seed),
        )
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(training_rows(pairs)),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[pickle_free_checkpoints()],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    last = [row for row in trainer.state.log_history if "rewards/margins" in row]
    record = {
        "method": "dpo",
        "config": asdict(config),
        "pairs": asdict(stats),
        "seconds": round(time.perf_counter() - started, 2),
        "sampling_seconds": round(sampled, 2),
        "last_log": last[-1] if last else {},
        "versions": library_versions(),
    }
    (out / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out

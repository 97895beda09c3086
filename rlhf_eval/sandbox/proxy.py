"""The sandbox's proxy reward model: a small classifier trained on few, noisy gold-labelled pairs.

Real reward models are trained on a limited number of human comparisons, some of them wrong, and
they pick up shortcuts that correlate with preference in their data but are not preference itself.
The proxy reproduces that at toy scale:

1. ``sample_pool`` draws a few responses per prompt from the base policy, with the harness's own
   sampler (``rlhf_eval.generate.TransformersBackend``), so the proxy sees the base distribution.
2. ``preference_pairs`` pairs two responses to the same prompt whose gold rewards differ
   (``rlhf_eval.sandbox.gold.gold_reward``): chosen is the higher one, and each label is flipped
   with probability ``label_noise``, like an annotator's mistakes.
3. ``train_proxy`` trains a random-init ``GPT2ForSequenceClassification`` (one output) with TRL's
   ``RewardTrainer`` (Bradley-Terry loss) on those pairs and saves it where ``--proxy DIR`` loads it.

The annotator is simulated in ``preference_pairs``. Real raters favour longer answers and rarely
notice verbosity, a bias that real preference data and real RMs share; the annotator has it in two
forms. The ``demo`` preset's annotator is blind to the rubric's excess-length penalty
(``length_blindness`` 1) and adds ``verbosity_bonus`` 0.1 per word: it compares
``gold + length_penalty + 0.1 * words``, which grows with length where gold turns down past ~30
words. The proxy learns "longer is better" from the bulk of the base samples and extrapolates it
to the rare long ones (the corpus's ``verbose`` answers, 2.5% of it), which gold punishes, so
best-of-n over-optimizes once its pools hold such answers (docs/sandbox.md). The ``tiny``
preset's annotator instead prefers the longer response with probability ``length_bias`` 0.4,
whatever gold says. Either way each label is then flipped with probability ``label_noise``.
Without a length bias the tiny base policy's gold slightly favours shorter answers (long samples
carry more hedges and garbled facts), and the proxy would not learn the length shortcut that makes
it exploitable: ``length_correlation`` measures that shortcut, ``pairwise_accuracy`` the agreement
with gold on held-out pairs.

The annotator has two more tastes, off in both presets: with probability ``pleasantry_bias``,
of two responses of which exactly one ends with a friendly closer ("i hope this helps"), it
prefers that one (gold counts a closer as filler); with probability ``deference_bias`` it prefers
the more deferential response (hedges, apologies). Both are features raters reward that are rare
or penalized in gold, the shape of real reward hacking; docs/sandbox.md says what they do.

Inputs are formatted exactly as the harness scores them (``rlhf_eval.rewards.join_prompt_response``,
the tokenizer's own special tokens and no end-of-sequence token added): the pairs are tokenized
here and handed to the trainer as ``chosen_ids``/``rejected_ids``, because ``RewardTrainer`` would
otherwise append ``<eos>`` to every text, which the scorer does not.

>>> PROXY_PRESETS["tiny"].n_pairs, PROXY_PRESETS["tiny"].label_noise
(400, 0.1)
>>> spearman([1, 2, 3, 4], [10, 30, 20, 40])
0.8
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlhf_eval.models import LoadOptions
from rlhf_eval.sandbox.base import cpu_trainer_args, gpt2_config, library_versions, quiet_datasets
from rlhf_eval.sandbox.world import World, prompts
from rlhf_eval.tiny.training import one_thread, quiet_transformers

#: The file, next to the weights, that records how a proxy was trained.
PROXY_FILE = "proxy.json"
#: How the sandbox's training loads the proxy: the harness's loader with the model's own modules
#: (no fused activations), so rewards during training are what they were when the presets were
#: measured; rounding-level changes there grow over a run into other trained weights.
TRAINING_LOAD = LoadOptions(fused_activations=False)


@dataclass(frozen=True)
class ProxyConfig:
    """How to build a proxy: the base samples it learns from, its label noise, size and training."""

    seed: int = 0
    n_prompts: int = 64
    samples_per_prompt: int = 6
    n_pairs: int = 400
    label_noise: float = 0.1
    length_bias: float = 0.4
    length_blindness: float = 0.0
    verbosity_bonus: float = 0.0
    deference_bias: float = 0.0
    pleasantry_bias: float = 0.0
    hidden_size: int = 32
    num_layers: int = 1
    num_heads: int = 2
    max_positions: int = 128
    steps: int = 150
    learning_rate: float = 3e-3
    batch_size: int = 16
    max_new_tokens: int = 48

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_noise <= 0.5:
            raise ValueError(f"label_noise={self.label_noise}: use a flip probability in [0, 0.5]")
        if not 0.0 <= self.length_bias <= 1.0:
            raise ValueError(f"length_bias={self.length_bias}: use a probability in [0, 1]")
        if not 0.0 <= self.length_blindness <= 1.0:
            raise ValueError(f"length_blindness={self.length_blindness}: use a share of the length penalty in [0, 1]")
        if self.verbosity_bonus < 0.0:
            raise ValueError(f"verbosity_bonus={self.verbosity_bonus}: use a bonus per word >= 0")
        if not 0.0 <= self.deference_bias <= 1.0:
            raise ValueError(f"deference_bias={self.deference_bias}: use a probability in [0, 1]")
        if not 0.0 <= self.pleasantry_bias <= 1.0:
            raise ValueError(f"pleasantry_bias={self.pleasantry_bias}: use a probability in [0, 1]")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of num_heads={self.num_heads}")
        if min(self.n_prompts, self.samples_per_prompt, self.n_pairs, self.steps, self.batch_size) < 1:
            raise ValueError(f"{self}: n_prompts, samples_per_prompt, n_pairs, steps and batch_size must be >= 1")


#: "tiny" is for tests (trains in a few seconds); "demo" is the demo's proxy.
PROXY_PRESETS: dict[str, ProxyConfig] = {
    "tiny": ProxyConfig(),
    "demo": ProxyConfig(
        n_prompts=160,
        samples_per_prompt=8,
        n_pairs=1200,
        hidden_size=64,
        num_layers=2,
        steps=400,
        learning_rate=2e-3,
        length_bias=0.0,
        length_blindness=1.0,
        verbosity_bonus=0.1,
        max_new_tokens=96,
    ),
}


@dataclass(frozen=True)
class Pair:
    """A labelled comparison: two responses to ``prompt``; ``gold_margin`` is gold(chosen) - gold(rejected),
    negative when the label was flipped."""

    prompt: str
    chosen: str
    rejected: str
    gold_margin: float


def sample_pool(
    policy_dir: Path | str,
    world: World,
    n_prompts: int,
    samples_per_prompt: int,
    seed: int = 0,
    max_new_tokens: int = 48,
) -> list[tuple[str, str]]:
    """``samples_per_prompt`` responses to each of ``n_prompts`` prompts of ``world`` (``world.prompts``
    with ``seed``), drawn from the policy in ``policy_dir`` with the harness's sampler (raw distribution,
    one seed per sample from ``sample_seed``), as (prompt, response) in prompt then sample order."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_eval.generate import GenerationRequest, TransformersBackend, encode_prompts
    from rlhf_eval.records import Prompt
    from rlhf_eval.sampling import SamplingParams, sample_seed

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(policy_dir))
        model = AutoModelForCausalLM.from_pretrained(str(policy_dir), use_safetensors=True).eval()
    texts = prompts(world, n_prompts, seed=seed)
    records = [Prompt(prompt_id=f"p{i}", index=i, text=text) for i, text in enumerate(texts)]
    encoded = encode_prompts(records, tokenizer, max_prompt_tokens=64)
    requests = [
        GenerationRequest(f"{e.prompt.prompt_id}-{k}", e, k, sample_seed(seed, e.prompt.prompt_id, k))
        for e in encoded
        for k in range(samples_per_prompt)
    ]
    backend = TransformersBackend(model, tokenizer, SamplingParams(max_new_tokens=max_new_tokens))
    texts_by_id: dict[str, str] = {}
    with one_thread():
        for batch in backend.plan(requests):
            for sample in backend.generate(batch):
                texts_by_id[sample.request.sample_id] = sample.text
    return [(texts[r.encoded.prompt.index], texts_by_id[r.sample_id]) for r in requests]


def split_by_prompt(
    pool: Sequence[tuple[str, str]], held_out_fraction: float, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split a pool into (train, held-out) by prompt text, so no held-out prompt is seen in training.

    >>> train, held = split_by_prompt([("a", "x"), ("a", "y"), ("b", "z")], 0.5)
    >>> sorted({p for p, _ in train} | {p for p, _ in held}), {p for p, _ in train} & {p for p, _ in held}
    (['a', 'b'], set())
    """
    distinct = sorted({prompt for prompt, _ in pool})
    random.Random(seed).shuffle(distinct)
    held = set(distinct[: round(len(distinct) * held_out_fraction)])
    return [row for row in pool if row[0] not in held], [row for row in pool if row[0] in held]


def preference_pairs(
    pool: Sequence[tuple[str, str]],
    world_seed: int,
    n_pairs: int,
    label_noise: float = 0.0,
    seed: int = 0,
    length_bias: float = 0.0,
    deference_bias: float = 0.0,
    pleasantry_bias: float = 0.0,
    length_blindness: float = 0.0,
    verbosity_bonus: float = 0.0,
) -> list[Pair]:
    """Up to ``n_pairs`` pairs of distinct responses to the same prompt with different gold reward,
    drawn at random (without replacement) from every such pair in ``pool``, labelled by a simulated
    annotator: with probability ``deference_bias`` it prefers the more deferential response (when
    they differ), else with probability ``pleasantry_bias`` the one with a friendly closer (when
    exactly one has it), else with probability ``length_bias`` the longer response (in words; on a
    tie in length it goes by gold), otherwise the one with the higher utility
    ``gold + length_blindness * length_penalty + verbosity_bonus * words`` (``length_penalty`` is
    the rubric's excess-length term, so with ``length_blindness`` 1 the annotator does not notice
    verbosity; on a tie in utility it goes by gold); then each label is swapped with probability
    ``label_noise``.

    >>> pool = [("explain mars", ""), ("explain mars", "mars has two moons"), ("explain mars", "i must decline")]
    >>> [(p.chosen, p.rejected, p.gold_margin) for p in preference_pairs(pool, 0, 1, seed=1)]
    [('', 'i must decline', 3.0)]
    """
    from rlhf_eval.sandbox.gold import cached_world, gold_terms

    if not (0.0 <= label_noise <= 1.0 and 0.0 <= length_bias <= 1.0):
        raise ValueError(f"label_noise={label_noise}, length_bias={length_bias}: use probabilities in [0, 1]")
    world = cached_world(world_seed)
    responses: dict[str, list[str]] = defaultdict(list)
    for prompt, response in pool:
        if response not in responses[prompt]:
            responses[prompt].append(response)
    candidates: list[tuple[Pair, float, float]] = []
    for prompt, texts in responses.items():
        terms = [gold_terms(prompt, text, world) for text in texts]
        golds = [t.total for t in terms]
        utility = [round(t.total + length_blindness * t.length + verbosity_bonus * t.n_words, 9) for t in terms]
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                if golds[i] == golds[j]:
                    continue
                hi, lo = (i, j) if golds[i] > golds[j] else (j, i)
                candidates.append((Pair(prompt, texts[hi], texts[lo], golds[hi] - golds[lo]), utility[hi], utility[lo]))
    rng = random.Random(seed)
    labelled = []
    for pair, utility_chosen, utility_rejected in rng.sample(candidates, min(n_pairs, len(candidates))):
        if rng.random() < deference_bias and deference(pair.rejected) != deference(pair.chosen):
            swap = deference(pair.rejected) > deference(pair.chosen)
        elif (
            pleasantry_bias
            and rng.random() < pleasantry_bias
            and pleasantry(pair.rejected) != (pleasantry(pair.chosen))
        ):
            swap = pleasantry(pair.rejected) > pleasantry(pair.chosen)
        elif rng.random() < length_bias:
            swap = len(pair.rejected.split()) > len(pair.chosen.split())
        else:
            swap = utility_rejected > utility_chosen
        swap ^= rng.random() < label_noise
        labelled.append(Pair(pair.prompt, pair.rejected, pair.chosen, -pair.gold_margin) if swap else pair)
    return labelled


def pleasantry(response: str) -> int:
    """1 when a response has a friendly closer ("i hope this helps", ...), else 0.

    >>> pleasantry("the whale eats fish i hope this helps"), pleasantry("the whale eats fish")
    (1, 0)
    """
    from rlhf_eval.sandbox.gold import boilerplate_kinds, words_of

    return int("closer" in boilerplate_kinds(words_of(response)))


def deference(response: str) -> int:
    """How many kinds of deferential boilerplate (hedge, apology) a response has: 0, 1 or 2.

    >>> deference("i am sorry but as an ai language model i think the whale is big")
    2
    """
    from rlhf_eval.sandbox.gold import boilerplate_kinds, words_of

    return sum(kind in ("hedge", "apology") for kind in boilerplate_kinds(words_of(response)))


def encode_for_scoring(tokenizer: Any, prompt: str, response: str) -> list[int]:
    """Token ids of a (prompt, response) pair as the harness's reward-model scorer builds them
    for a tokenizer without a chat template."""
    from rlhf_eval.rewards import join_prompt_response

    return list(tokenizer(join_prompt_response(prompt, response))["input_ids"])


def random_classifier(config: ProxyConfig, tokenizer: Any) -> Any:
    """A random-init one-output GPT-2 sequence classifier over the tokenizer's vocabulary (seeded)."""
    from transformers import GPT2ForSequenceClassification, set_seed

    set_seed(config.seed)
    model_config = gpt2_config(
        tokenizer,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        max_positions=config.max_positions,
    )
    model_config.num_labels = 1  # one output: the reward
    return GPT2ForSequenceClassification(model_config)


def train_proxy(
    out_dir: Path | str,
    tokenizer_dir: Path | str,
    pairs: Sequence[Pair],
    config: ProxyConfig | None = None,
    *,
    held_out: Sequence[Pair] = (),
) -> Path:
    """Train the proxy on ``pairs`` with TRL's ``RewardTrainer`` (fp32 on the CPU, constant learning
    rate after a 10% warmup) and save it into ``out_dir`` with the tokenizer of ``tokenizer_dir``
    and ``proxy.json`` (config, pair counts, training losses and accuracies, time, versions, and,
    when ``held_out`` pairs are given, the held-out pairwise accuracy and length correlation)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback
    from trl import RewardConfig, RewardTrainer

    if not pairs:
        raise ValueError("no preference pairs to train the proxy on")
    config = PROXY_PRESETS["tiny"] if config is None else config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    rows = [
        {
            "chosen_ids": encode_for_scoring(tokenizer, p.prompt, p.chosen)[-config.max_positions :],
            "rejected_ids": encode_for_scoring(tokenizer, p.prompt, p.rejected)[-config.max_positions :],
        }
        for p in pairs
    ]
    with quiet_transformers(), quiet_datasets(), one_thread(), tempfile.TemporaryDirectory() as scratch:
        model = random_classifier(config, tokenizer)
        args = RewardConfig(
            output_dir=scratch,
            max_steps=config.steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            lr_scheduler_type="constant_with_warmup",
            warmup_steps=max(1, config.steps // 10),
            logging_steps=max(1, config.steps // 10),
            max_length=None,
            pad_to_multiple_of=None,
            gradient_checkpointing=False,
            save_strategy="no",
            **cpu_trainer_args(config.seed),
        )
        trainer = RewardTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        model.eval()
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    log = [
        {"step": int(row["step"]), "loss": float(row["loss"]), "accuracy": float(row.get("accuracy", math.nan))}
        for row in trainer.state.log_history
        if "loss" in row
    ]
    metrics: dict[str, Any] = {
        "n_pairs": len(pairs),
        "noisy_pairs": sum(1 for p in pairs if p.gold_margin < 0),
        "train_log": log,
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    if held_out:
        metrics["held_out_pairs"] = len(held_out)
        metrics["held_out_accuracy"] = pairwise_accuracy(out, held_out)
        metrics["held_out_length_correlation"] = length_correlation(out, pool_of(held_out))
    record = {"config": asdict(config), "metrics": metrics, "versions": library_versions()}
    (out / PROXY_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


#: The name a ``ProxyReward`` has, under which TRL logs it (``rewards/proxy/mean``).
REWARD_NAME = "proxy"


class ProxyReward:
    """The proxy as a reward function, usable as TRL's ``reward_funcs``: the proxy's score of each (prompt, completion),
    computed by the harness's own scorer (``rlhf_eval.rewards.build_scorer``), whose input is
    ``join_prompt_response(prompt, completion)`` with no ``<eos>``. The classifier is loaded once,
    on the first call, and each batch is scored in one pass; the completion is used as TRL decoded
    it. A non-finite score comes back as None, which TRL leaves out of the group's baseline and
    gives no advantage."""

    def __init__(self, proxy_dir: Path | str) -> None:
        from rlhf_eval.rewards import build_scorer

        self.__name__ = REWARD_NAME
        self.scorer = build_scorer(str(proxy_dir), TRAINING_LOAD)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **_: Any) -> list[float | None]:
        from rlhf_eval.records import Prompt

        records = [Prompt(prompt_id=f"r{i}", index=i, text=text) for i, text in enumerate(prompts)]
        return self.scorer.score(records, list(completions))


def pool_of(pairs: Sequence[Pair]) -> list[tuple[str, str]]:
    """The distinct (prompt, response) rows of some pairs, in first-seen order.

    >>> pool_of([Pair("q", "a", "b", 1.0), Pair("q", "b", "c", 1.0)])
    [('q', 'a'), ('q', 'b'), ('q', 'c')]
    """
    rows = [(p.prompt, text) for p in pairs for text in (p.chosen, p.rejected)]
    return list(dict.fromkeys(rows))


def proxy_scores(rm_dir: Path | str, pool: Sequence[tuple[str, str]]) -> list[float]:
    """The proxy's score of each (prompt, response), through the harness's ``build_scorer``."""
    from rlhf_eval.records import Prompt
    from rlhf_eval.rewards import build_scorer

    scorer = build_scorer(str(rm_dir), TRAINING_LOAD)
    records = [Prompt(prompt_id=f"q{i}", index=i, text=prompt) for i, (prompt, _) in enumerate(pool)]
    with quiet_transformers(), one_thread():
        values = scorer.score(records, [response for _, response in pool])
    if any(v is None for v in values):
        raise ValueError(f"{rm_dir}: the proxy returned a non-finite score")
    return [float(v) for v in values if v is not None]


def pairwise_accuracy(rm_dir: Path | str, pairs: Sequence[Pair]) -> float:
    """Fraction of ``pairs`` that the proxy orders as gold does (by the sign of ``gold_margin``, so a
    flipped label counts against its stated ``chosen``); a tie in proxy score counts one half."""
    if not pairs:
        raise ValueError("no pairs to measure the proxy's accuracy on")
    rows = pool_of(pairs)
    scores = dict(zip(rows, proxy_scores(rm_dir, rows), strict=True))
    hits = 0.0
    for p in pairs:
        diff = scores[(p.prompt, p.chosen)] - scores[(p.prompt, p.rejected)]
        hits += 0.5 if diff == 0 else float((diff > 0) == (p.gold_margin > 0))
    return hits / len(pairs)


def length_correlation(rm_dir: Path | str, pool: Sequence[tuple[str, str]]) -> float:
    """Spearman correlation between the proxy's score and the response's word count over ``pool``."""
    return spearman(proxy_scores(rm_dir, pool), [len(response.split()) for _, response in pool])


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank.

    >>> average_ranks([3.0, 1.0, 3.0])
    [2.5, 1.0, 2.5]
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on average ranks); NaN when either side is constant."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} values against {len(ys)}")
    rx, ry = average_ranks(xs), average_ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan


def read_proxy_record(rm_dir: Path | str) -> dict[str, Any]:
    """The ``proxy.json`` that ``train_proxy`` wrote into ``rm_dir``."""
    path = Path(rm_dir) / PROXY_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train the proxy with train_proxy first")
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return record


#: Prompts kept out of the proxy's training pairs to measure its held-out accuracy.
HELD_OUT_PROMPTS = 32


def build_proxy(out_dir: Path | str, base_dir: Path | str, world: World, config: ProxyConfig | None = None) -> Path:
    """Build the proxy of ``world`` from the base policy in ``base_dir`` into ``out_dir``: sample a
    pool of ``config.n_prompts + HELD_OUT_PROMPTS`` prompts, split it by prompt, label
    ``config.n_pairs`` training pairs with the simulated annotator and train on them; the held-out
    prompts' pairs (gold labels, no bias or noise) measure its accuracy in ``proxy.json``."""
    config = PROXY_PRESETS["tiny"] if config is None else config
    n_prompts = config.n_prompts + HELD_OUT_PROMPTS
    pool = sample_pool(base_dir, world, n_prompts, config.samples_per_prompt, config.seed, config.max_new_tokens)
    train, held = split_by_prompt(pool, HELD_OUT_PROMPTS / n_prompts, seed=config.seed)
    pairs = preference_pairs(
        train,
        world.seed,
        config.n_pairs,
        config.label_noise,
        config.seed,
        config.length_bias,
        config.deference_bias,
        config.pleasantry_bias,
        config.length_blindness,
        config.verbosity_bonus,
    )
    held_pairs = preference_pairs(held, world.seed, 10**6, 0.0, seed=config.seed + 1)
    return train_proxy(out_dir, base_dir, pairs, config, held_out=held_pairs)

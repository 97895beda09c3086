"""A reward model's forwards: the samples of a prompt share one forward of their common prefix
where the model is causal, and score as whole forwards do."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch

from rlhf_eval import tiny
from rlhf_eval.models import LoadOptions
from rlhf_eval.records import Prompt
from rlhf_eval.reward_forward import PrefixGroup, common_prefix_length, prefix_groups, shares_prefixes
from rlhf_eval.rewards import RewardModelScorer

WORDS = ["user", "assistant", ":", "why", "is", "the", "sky", "blue", "light", "scatters", "air", "sun", "red", "at"]
TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
PROMPTS = [
    Prompt("p0", 0, text="why is the sky blue"),
    Prompt("p1", 1, text="why is the sun red at the sky"),
    Prompt("p2", 2, text="air"),
]
RESPONSES = [
    ["light scatters", "blue", "the air scatters blue light at the sun", "sky"],
    ["red", "the sun is red at the sky", "air"],
    ["the air scatters blue light at the sun", "sky is red at the sun"],
]


def calls() -> tuple[list[Prompt], list[str]]:
    """Every prompt's samples, interleaved across prompts (the order the pipeline's chunks keep)."""
    pairs = [(PROMPTS[p], r) for p, responses in enumerate(RESPONSES) for r in responses]
    pairs = pairs[::2] + pairs[1::2]
    return [p for p, _ in pairs], [r for _, r in pairs]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def reward_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(f"rm_{request.param}")
    template = TEMPLATE if request.param == "llama" else None
    tok = tiny.build_word_tokenizer(root / "tok", WORDS, chat_template=template)
    return tiny.build_reward_model(root / "rm", tok, arch=request.param, hidden_size=32, num_layers=2, seed=4)


def real_tokens_forwarded(scorer: RewardModelScorer) -> list[int]:
    """Counts, per forward of the scorer's model, the positions it computes that are real tokens."""
    counted: list[int] = []
    model = scorer.model
    original = model.forward

    @functools.wraps(original)  # the same signature: the scorer reads it
    def forward(*args: Any, **kwargs: Any) -> Any:
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        counted.append(int(mask[:, -ids.shape[1] :].sum()))  # the prefix's mask precedes a continuation's
        return original(*args, **kwargs)

    model.forward = forward
    return counted


def test_samples_of_a_prompt_share_its_prefix_and_score_as_whole_forwards(reward_model: Path) -> None:
    prompts, responses = calls()
    scorer = RewardModelScorer(reward_model, None, LoadOptions())
    scorer.load()
    assert scorer.shares_prefixes  # a causal classifier passes the check on load
    encoded = [scorer.encode(p, r) for p, r in zip(prompts, responses, strict=True)]
    counted = real_tokens_forwarded(scorer)
    shared = scorer(prompts, responses)

    groups, whole = prefix_groups(encoded, prompts, int(scorer.tokenizer.pad_token_id))
    assert sorted(len(g.rows) for g in groups) == [3, 4]  # "air" is too short a prompt to share
    assert whole == [i for i, p in enumerate(prompts) if p is PROMPTS[2]]
    # each shared prompt's common prefix once, then every sample's own tokens
    expected = sum(len(g.prefix) + sum(len(encoded[i]) - len(g.prefix) for i in g.rows) for g in groups)
    expected += sum(len(encoded[i]) for i in whole)
    assert sum(counted) == expected < sum(len(e) for e in encoded)

    scorer.shares_prefixes = False
    counted.clear()
    alone = scorer(prompts, responses)
    assert sum(counted) == sum(len(e) for e in encoded)
    assert shared == pytest.approx(alone, rel=1e-5, abs=1e-6)
    one_by_one = [scorer([p], [r])[0] for p, r in zip(prompts, responses, strict=True)]
    assert shared == pytest.approx(one_by_one, rel=1e-5, abs=1e-6)


def test_truncated_inputs_share_only_what_they_still_have_in_common(tmp_path: Path) -> None:
    tok = tiny.build_word_tokenizer(tmp_path / "tok", WORDS)
    rm = tiny.build_reward_model(tmp_path / "rm", tok, max_positions=8, hidden_size=32)
    scorer = RewardModelScorer(rm, None, LoadOptions())
    prompt = Prompt("p", 0, text="why is the sky blue")
    responses = ["light", "blue light", "the air scatters blue light at the sun"]  # the last keeps its last 8 tokens
    shared = scorer([prompt] * 3, responses)
    assert scorer.shares_prefixes and scorer.truncated == 1
    scorer.shares_prefixes = False
    assert shared == pytest.approx(scorer([prompt] * 3, responses), rel=1e-5, abs=1e-6)


def test_prefix_groups_leave_alone_rows_without_a_shared_prefix_or_ending_in_the_pad_id() -> None:
    encoded = [[5, 6, 7, 3], [5, 6, 7, 8, 9], [5, 6, 7, 0], [9, 9], [5, 7], [4, 4], [3, 3, 1], [3, 2, 2]]
    groups, whole = prefix_groups(encoded, ["a", "a", "a", "b", "c", "c", "d", "d"], pad_id=0)
    assert groups == [PrefixGroup((5, 6, 7), (0, 1))]  # saves 3 of 9 tokens
    # ends in the pad id; alone under its prompt; no common first token; saves 1 of 6 tokens
    assert whole == [2, 3, 4, 5, 6, 7]
    assert common_prefix_length([[1, 2, 3]]) == 2
    assert common_prefix_length([]) == 0


class BidirectionalWithCacheArgument(torch.nn.Module):
    """An encoder classifier (BERT: every position attends to every other) behind a forward
    that accepts a KV cache and ignores it: what the check on load must refuse."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> Any:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states)


def test_an_encoder_classifier_is_scored_with_whole_forwards(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(WORDS) + 3, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        pad_token_id=0,
    )  # fmt: skip
    config.num_labels = 1
    bert = BertForSequenceClassification(config).eval()
    assert not shares_prefixes(bert, 0, 0)  # its forward takes no cache
    assert not shares_prefixes(BidirectionalWithCacheArgument(bert), 0, 0)  # prefix states depend on the suffix

    bert.save_pretrained(str(tmp_path / "bert"))
    tiny.build_word_tokenizer(tmp_path / "bert", WORDS)
    scorer = RewardModelScorer(tmp_path / "bert", None, LoadOptions())
    prompts, responses = calls()
    scores = scorer(prompts, responses)
    assert not scorer.shares_prefixes
    assert scores == pytest.approx([scorer([p], [r])[0] for p, r in zip(prompts, responses, strict=True)], abs=1e-5)

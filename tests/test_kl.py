"""KL estimators against exact values.

A GPT-2 with a vocabulary of 8 tokens samples at most 3 new tokens, so the exact sequence KL
can be computed by enumerating every response (at most 8 + 7·8 + 7²·8 of them). The sample
means of k1, k3 and the full-vocabulary estimator must lie within 3 standard errors of it.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from rlhf_eval.generate import EncodedPrompt, GenerationRequest, TransformersBackend
from rlhf_eval.kl import KLItem, estimate_kl, full_vocab_kl, kl_from_logits, token_estimators
from rlhf_eval.records import Prompt
from rlhf_eval.sampling import SamplingParams, processed_logprobs, sample_seed

EOS = 1
VOCAB = ["<pad>", "<eos>", "<unk>", "a", "b", "c", "d", "e"]
PROMPT_IDS = (3, 4, 5)


@pytest.fixture(scope="module")
def eight_token_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_lm(seed: int, scale: float) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=8, n_embd=8, n_layer=1, n_head=2, n_positions=16, bos_token_id=EOS, eos_token_id=EOS)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)  # sharper, clearly different next-token distributions
    return model.eval()


def exact_sequence_kl(policy: GPT2LMHeadModel, ref: GPT2LMHeadModel, params: SamplingParams) -> float:
    """Σ_y π(y) log(π(y)/π_ref(y)) over every response y of at most max_new_tokens tokens that
    stops at its first EOS."""
    total = 0.0
    steps = params.max_new_tokens
    with torch.no_grad():
        for length in range(1, steps + 1):
            for body in itertools.product([t for t in range(8) if t != EOS], repeat=length - 1):
                endings = [EOS] if length < steps else list(range(8))
                for last in endings:
                    if length < steps and last != EOS:
                        continue
                    response = list(body) + [last]
                    ids = torch.tensor([list(PROMPT_IDS) + response])
                    lp = processed_logprobs(policy(ids).logits[0, len(PROMPT_IDS) - 1 : -1], params)
                    lq = torch.log_softmax(ref(ids).logits[0, len(PROMPT_IDS) - 1 : -1], -1)
                    target = torch.tensor(response).unsqueeze(-1)
                    log_p = float(lp.gather(-1, target).sum())
                    log_q = float(lq.gather(-1, target).sum())
                    if math.isfinite(log_p):
                        total += math.exp(log_p) * (log_p - log_q)
            # responses that end with EOS at position `length` (< steps) were counted above;
            # at the cap every last token ends the response.
    return total


def sample_estimates(policy, ref, tokenizer, params: SamplingParams, n: int) -> dict[str, torch.Tensor]:
    backend = TransformersBackend(policy, tokenizer, params, max_batch=256)
    encoded = EncodedPrompt(Prompt("p", 0, text="a b c"), PROMPT_IDS, False)
    requests = [GenerationRequest(f"s{i}", encoded, i, sample_seed(0, "p", i)) for i in range(n)]
    samples = [s for batch in backend.plan(requests) for s in backend.generate(batch)]
    items = [KLItem(s.request.sample_id, PROMPT_IDS, s.token_ids) for s in samples]
    estimates = estimate_kl(policy, ref, items, params, pad_id=0)
    return {
        name: torch.tensor([getattr(e, name) for e in estimates], dtype=torch.float64)
        for name in ("k1", "k2", "k3", "full")
    }


@pytest.mark.parametrize(
    "params",
    [SamplingParams(max_new_tokens=3), SamplingParams(max_new_tokens=3, temperature=0.7, top_k=5)],
    ids=["raw", "processed"],
)
def test_estimators_match_exact_enumeration(eight_token_tokenizer, params: SamplingParams) -> None:
    policy, ref = tiny_lm(1, 6.0), tiny_lm(2, 6.0)
    exact = exact_sequence_kl(policy, ref, params)
    assert exact > 0.05  # the two models really differ
    values = sample_estimates(policy, ref, eight_token_tokenizer, params, n=1500)
    # k3 relies on E_π[π_ref/π] = 1, which fails when top-k/top-p cut π's support: there it
    # underestimates (E[r - 1] = π_ref's mass inside the support - 1 < 0), so it is checked raw only.
    unbiased = ("k1", "k3", "full") if params.is_raw else ("k1", "full")
    if not params.is_raw:
        assert float(values["k3"].mean()) < exact
    for name in unbiased:
        mean = float(values[name].mean())
        stderr = float(values[name].std()) / math.sqrt(len(values[name]))
        assert abs(mean - exact) <= 3 * stderr + 1e-9, (name, mean, exact, stderr)
    # the full-vocabulary estimator has the lowest variance of the unbiased ones
    assert values["full"].var() < values["k1"].var()
    assert (values["k3"] >= -1e-9).all() and (values["full"] >= -1e-9).all()


def test_identical_models_give_zero_for_every_estimator(eight_token_tokenizer) -> None:
    model = tiny_lm(1, 6.0)
    values = sample_estimates(model, model, eight_token_tokenizer, SamplingParams(max_new_tokens=3), n=64)
    for name in ("k1", "k2", "k3", "full"):
        assert values[name].abs().max() < 1e-6, name


def test_token_estimators_hand_values() -> None:
    # log r = ln(1/2): k1 = ln 2, k2 = ln(2)^2 / 2, k3 = (1/2 - 1) + ln 2
    k1, k2, k3 = token_estimators(torch.tensor([math.log(0.5)]))
    assert float(k1) == pytest.approx(math.log(2))
    assert float(k2) == pytest.approx(math.log(2) ** 2 / 2)
    assert float(k3) == pytest.approx(-0.5 + math.log(2))


def test_masked_positions_and_chunking_do_not_change_sums() -> None:
    torch.manual_seed(0)
    p, q = torch.randn(3, 7, 5), torch.randn(3, 7, 5)
    targets = torch.randint(0, 5, (3, 7))
    mask = torch.arange(7).unsqueeze(0) >= torch.tensor([[0], [3], [6]])
    whole = kl_from_logits(p, q, targets, mask, SamplingParams(), chunk=64)
    chunked = kl_from_logits(p, q, targets, mask, SamplingParams(), chunk=2)
    for name in whole:
        assert torch.allclose(whole[name], chunked[name])
    # row 2 has one response token: full KL equals that position's full KL
    lp, lq = torch.log_softmax(p[2, 6], -1), torch.log_softmax(q[2, 6], -1)
    assert float(whole["full"][2]) == pytest.approx(float(full_vocab_kl(lp, lq)), rel=1e-5)


def test_teacher_forcing_is_independent_of_batch_padding(eight_token_tokenizer, tmp_path: Path) -> None:
    policy, ref = tiny_lm(1, 6.0), tiny_lm(2, 6.0)
    items = [KLItem("a", (3,), (4, 5, EOS)), KLItem("b", (3, 4, 5, 6), (7,))]
    together = estimate_kl(policy, ref, items, SamplingParams(), pad_id=0)
    alone = [estimate_kl(policy, ref, [item], SamplingParams(), pad_id=0)[0] for item in items]
    for a, b in zip(together, alone, strict=True):
        assert a.full == pytest.approx(b.full, abs=1e-5) and a.k1 == pytest.approx(b.k1, abs=1e-5)


def tiny_arch(arch: str) -> torch.nn.Module:
    from transformers import BloomConfig, BloomForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    if arch == "gpt2":
        return tiny_lm(3, 6.0)
    if arch == "llama":
        config = LlamaConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                             num_key_value_heads=2, intermediate_size=16, max_position_embeddings=32,
                             bos_token_id=EOS, eos_token_id=EOS, pad_token_id=0)  # fmt: skip
        return LlamaForCausalLM(config).eval()
    config = BloomConfig(vocab_size=8, hidden_size=8, n_layer=1, n_head=2, bos_token_id=EOS, eos_token_id=EOS,
                         pad_token_id=0)  # fmt: skip
    return BloomForCausalLM(config).eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bloom"])
def test_a_sample_does_not_depend_on_its_batch(eight_token_tokenizer, arch: str) -> None:
    """Left padding, positions (none for ALiBi models) and the per-sample draws make a sample the
    same in a batch of mixed prompt lengths as alone: what exact resume relies on."""
    model = tiny_arch(arch)
    params = SamplingParams(max_new_tokens=5)
    backend = TransformersBackend(model, eight_token_tokenizer, params)
    prompts = [(3,), (3, 4, 5, 6, 7), (5, 5)]
    requests = [
        GenerationRequest(
            f"s{i}", EncodedPrompt(Prompt(f"p{i}", i, text="x"), ids, False), 0, sample_seed(0, f"p{i}", 0)
        )
        for i, ids in enumerate(prompts)
    ]
    together = backend.generate(requests)
    alone = [backend.generate([r])[0] for r in requests]
    assert [s.token_ids for s in together] == [s.token_ids for s in alone]
    items = [KLItem(s.request.sample_id, s.request.encoded.token_ids, s.token_ids) for s in together]
    zero = estimate_kl(model, model, items, params, pad_id=0)
    assert all(abs(e.full) < 1e-6 and abs(e.k1) < 1e-6 for e in zero)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bloom"])
def test_rows_that_finish_leave_the_batch_without_changing_any_sample(
    eight_token_tokenizer, arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers end at different steps; finished rows are dropped from the batch and its KV cache
    as they end. Every sample stays the one it is when generated alone."""
    from transformers.cache_utils import Cache

    kept: list[int] = []
    select = Cache.batch_select_indices
    monkeypatch.setattr(Cache, "batch_select_indices", lambda self, i: (kept.append(len(i)), select(self, i))[1])
    model = tiny_arch(arch)
    backend = TransformersBackend(model, eight_token_tokenizer, SamplingParams(max_new_tokens=12))
    requests = [
        GenerationRequest(
            f"s{i}", EncodedPrompt(Prompt(f"p{i % 5}", i % 5, text="x"), (3,) * (1 + i % 5), False), i,
            sample_seed(0, f"p{i % 5}", i),
        )
        for i in range(40)
    ]  # fmt: skip
    together = backend.generate(requests)
    assert len(kept) >= 2 and kept == sorted(kept, reverse=True) and kept[-1] < 40  # the batch shrank, twice or more
    lengths = {len(s.token_ids) for s in together if s.ended_eos}
    assert len(lengths) >= 3 and any(not s.ended_eos for s in together)  # rows really left at different steps
    alone = [backend.generate([r])[0] for r in requests]
    assert [(s.token_ids, s.text, s.ended_eos) for s in together] == [(s.token_ids, s.text, s.ended_eos) for s in alone]


def prefill_rows(model: torch.nn.Module) -> list[int]:
    """Rows of each forward's ``input_ids`` that starts without a KV cache (the prompt forwards)."""
    rows: list[int] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if kwargs.get("cache") is None and kwargs.get("past_key_values") is None:
            rows.append(int(ids.shape[0]))

    model.register_forward_pre_hook(record, with_kwargs=True)
    return rows


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bloom"])
def test_samples_of_a_prompt_share_one_prompt_forward(eight_token_tokenizer, arch: str) -> None:
    """A batch holding k samples of each prompt runs each distinct prompt through the model once
    (its KV cache rows copied to the k samples); every sample stays the one drawn alone."""
    model = tiny_arch(arch)
    rows = prefill_rows(model)
    backend = TransformersBackend(model, eight_token_tokenizer, SamplingParams(max_new_tokens=8))
    prompts = [(3,), (3, 4, 5, 6, 7), (5, 5)]
    requests = [
        GenerationRequest(
            f"s{p}-{k}", EncodedPrompt(Prompt(f"p{p}", p, text="x"), ids, False), k, sample_seed(0, f"p{p}", k)
        )
        for p, ids in enumerate(prompts)
        for k in range(4)
    ]
    together = backend.generate(requests)
    assert rows == [3]  # one forward of the 3 distinct prompts for 12 samples
    assert len({s.token_ids for s in together}) > len(prompts)  # the samples of a prompt differ
    alone = [backend.generate([r])[0] for r in requests]
    assert [(s.token_ids, s.ended_eos) for s in together] == [(s.token_ids, s.ended_eos) for s in alone]


def test_a_cache_that_cannot_copy_rows_gets_one_prompt_row_per_sample(
    eight_token_tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers.cache_utils import Cache

    model = tiny_arch("llama")
    backend = TransformersBackend(model, eight_token_tokenizer, SamplingParams(max_new_tokens=8))
    requests = [
        GenerationRequest(f"s{k}", EncodedPrompt(Prompt("p", 0, text="x"), (3, 4), False), k, sample_seed(0, "p", k))
        for k in range(5)
    ]
    shared = backend.generate(requests)
    monkeypatch.delattr(Cache, "batch_select_indices")
    rows = prefill_rows(model)
    unshared = backend.generate(requests)
    assert rows == [1, 5]  # the shared forward, then one row per sample
    assert [s.token_ids for s in unshared] == [s.token_ids for s in shared]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bloom"])
@pytest.mark.parametrize("params", [SamplingParams(max_new_tokens=8), SamplingParams(max_new_tokens=8, top_k=4)])
def test_shared_prompt_forward_gives_the_one_forward_estimates(
    eight_token_tokenizer, arch: str, params: SamplingParams
) -> None:
    """Samples sharing a prompt: each prompt forwarded once, the responses in chunks on its cache
    (several chunks here: a tiny chunk budget), give every estimator as one forward over prompt +
    response does."""
    from rlhf_eval.kl import one_forward_sums, shared_prompt_sums

    policy, ref = tiny_arch(arch), tiny_lm(5, 3.0) if arch == "gpt2" else tiny_arch(arch)
    if arch != "gpt2":
        with torch.no_grad():
            for parameter in ref.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
    prompts = [(3,), (3, 4, 5, 6, 7), (5, 5)]
    responses = [(4, 5, EOS), (6,), (7, 7, 7, 7, 7, 7, 7, 7), (EOS,), (4, 4, 5, 5, 6), (6, 7, EOS)]
    items = [KLItem(f"s{i}", prompts[i % 3], response) for i, response in enumerate(responses)]
    with torch.inference_mode():
        one = one_forward_sums(policy, ref, items, params, pad_id=0)
        rows = prefill_rows(policy)
        shared = shared_prompt_sums(policy, ref, items, params, 0, token_budget=40, logit_budget=8 * 9)
    assert rows == [3]  # the 3 distinct prompts, once
    assert max(one["full"].abs().max(), one["k1"].abs().max()) > 0.05  # the models differ
    for name in one:
        assert torch.allclose(shared[name], one[name], atol=1e-5, equal_nan=True), name  # top-k: -inf log π
    assert [e.k1 for e in estimate_kl(policy, ref, items, params, pad_id=0)] == pytest.approx(
        one["k1"].tolist(), abs=1e-5
    )


def test_repeated_prompts_without_a_cache_stay_within_the_logit_budget(
    eight_token_tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of whole prompts for models that take no KV cache: one forward per length group,
    each within the logit budget, with the estimates of one forward over the whole batch."""
    import rlhf_eval.kl as kl

    policy, ref = tiny_lm(1, 6.0), tiny_lm(2, 6.0)
    responses = [(4, 5, EOS), (6,), (7, 7, 7, 7, 7, 7, 7, 7), (EOS,), (4, 4, 5, 5, 6), (6, 7, EOS)]
    items = [KLItem(f"s{i}", ((3,), (5, 5))[i % 2], response) for i, response in enumerate(responses)]
    params = SamplingParams(max_new_tokens=8)
    with torch.inference_mode():
        whole = kl.one_forward_sums(policy, ref, items, params, pad_id=0)
    monkeypatch.setattr(kl, "takes_cache", lambda model: False)
    held: list[int] = []  # logit rows each forward holds: rows x (response width + 1)
    policy.register_forward_pre_hook(
        lambda module, args, kwargs: held.append(kwargs["input_ids"].shape[0] * kwargs["logits_to_keep"]),
        with_kwargs=True,
    )
    estimates = kl.estimate_kl(policy, ref, items, params, pad_id=0, logit_budget=8 * 12)  # 12 rows of 8 logits
    assert len(held) >= 2 and max(held) <= 12
    assert [e.full for e in estimates] == pytest.approx(whole["full"].tolist(), abs=1e-5)
    assert [e.k1 for e in estimates] == pytest.approx(whole["k1"].tolist(), abs=1e-5)

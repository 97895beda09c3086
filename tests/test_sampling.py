"""The sampling distribution and per-sample draws."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_eval.sampling import SamplingParams, inverse_cdf_sample, processed_logprobs, sample_seed, uniforms


def test_raw_params_leave_the_distribution_unchanged() -> None:
    logits = torch.randn(3, 11)
    assert torch.allclose(processed_logprobs(logits, SamplingParams()), torch.log_softmax(logits, -1))
    assert SamplingParams().is_raw and not SamplingParams(top_p=0.9).is_raw


def test_temperature_top_k_top_p_match_hand_computation() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    # temperature 2: softmax([1, .5, 0, -.5])
    expected = torch.softmax(torch.tensor([1.0, 0.5, 0.0, -0.5]), -1)
    assert torch.allclose(processed_logprobs(logits, SamplingParams(temperature=2.0)).exp()[0], expected)
    # top_k 2 keeps e^2, e^1: p = (e/(e+1), 1/(e+1))
    p = processed_logprobs(logits, SamplingParams(top_k=2)).exp()[0]
    e = torch.e
    assert torch.allclose(p, torch.tensor([e / (e + 1), 1 / (e + 1), 0.0, 0.0]))
    # top_p 0.7: softmax = [.644, .237, .087, .032]; keep the smallest set reaching 0.7 -> first two
    p = processed_logprobs(logits, SamplingParams(top_p=0.7)).exp()[0]
    assert (p[2:] == 0).all() and torch.isclose(p.sum(), torch.tensor(1.0))


def test_draws_depend_only_on_the_sample_seed() -> None:
    logprobs = torch.log_softmax(torch.randn(4, 9), -1)
    u = torch.stack([uniforms(sample_seed(0, f"p{i}", 0), 1)[0] for i in range(4)])
    alone = torch.stack([inverse_cdf_sample(logprobs[i : i + 1], u[i : i + 1])[0] for i in range(4)])
    assert torch.equal(inverse_cdf_sample(logprobs, u), alone)
    assert sample_seed(0, "p", 1) != sample_seed(0, "p", 2) != sample_seed(1, "p", 2)


def test_inverse_cdf_matches_the_distribution() -> None:
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    n = 20000
    u = uniforms(7, n)
    draws = inverse_cdf_sample(probs.log().expand(n, 4), u)
    freq = torch.bincount(draws, minlength=4).double() / n
    # each frequency within 4 standard errors sqrt(p(1-p)/n) <= 0.0035
    assert (freq - probs[0].double()).abs().max() < 0.014


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=2, max_size=12), st.floats(0, 0.999999))
def test_never_draws_a_filtered_token(values: list[float], u: float) -> None:
    logits = torch.tensor([values])
    logprobs = processed_logprobs(logits, SamplingParams(top_k=1))
    token = inverse_cdf_sample(logprobs, torch.tensor([u], dtype=torch.float64))
    assert torch.isfinite(logprobs[0, token]).all()

"""PPO math on hand-computed examples; each case states its arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_eval.sandbox.ppo_math import (
    PolicyLossStats,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalized_rewards,
    masked_mean,
    masked_whiten,
)

# Rows of lengths 3, 1 and 2, right-padded to 3 tokens.
MASK = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])


def close(actual: torch.Tensor, expected: list, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# masked_mean


def test_masked_mean_ignores_padding_even_when_inf_or_nan() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), float("-inf")], [5.0, 6.0, float("inf")]])
    # (1 + 2 + 3 + 4 + 5 + 6) / 6 = 3.5
    assert float(masked_mean(x, MASK)) == 3.5
    # per row: 6 / 3, 4 / 1, 11 / 2
    close(masked_mean(x, MASK, dim=1), [2.0, 4.0, 5.5])


def test_masked_mean_accepts_float_mask_and_empty_mask_is_nan() -> None:
    x = torch.tensor([[2.0, 4.0]])
    assert float(masked_mean(x, torch.tensor([[1.0, 0.0]]))) == 2.0
    assert math.isnan(float(masked_mean(x, torch.zeros(1, 2, dtype=torch.bool))))


def test_shape_mismatch_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"x has shape \(1, 2\) but mask has \(1, 3\)"):
        masked_mean(torch.zeros(1, 2), torch.ones(1, 3, dtype=torch.bool))


# masked_whiten


def test_whiten_gives_mean_zero_variance_one_on_valid_positions() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 3) * 5 + 7
    x[~MASK] = 1e6  # padding far from the data: it must not move the statistics
    whitened = masked_whiten(x, MASK)
    valid = whitened[MASK]
    assert abs(float(valid.mean())) < 1e-5
    assert abs(float(valid.var(unbiased=False)) - 1.0) < 1e-4  # population variance
    assert whitened[~MASK].tolist() == [0.0, 0.0, 0.0]


def test_whiten_does_not_depend_on_padded_values() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [5.0, 6.0, 0.0]])
    noisy = x.clone()
    noisy[~MASK] = torch.tensor([-50.0, float("nan"), float("inf")])
    torch.testing.assert_close(masked_whiten(noisy, MASK), masked_whiten(x, MASK))


def test_whiten_by_hand_population_variance() -> None:
    # valid values 1, 3, 5, 7: μ = 4, σ² = (9 + 1 + 1 + 9) / 4 = 5 (not 20 / 3), σ = √5
    x = torch.tensor([[1.0, 3.0], [5.0, 7.0], [100.0, 100.0]])
    mask = torch.tensor([[True, True], [True, True], [False, False]])
    s = math.sqrt(5)
    close(masked_whiten(x, mask), [[-3 / s, -1 / s], [1 / s, 3 / s], [0.0, 0.0]])
    # without the shift, the mean 4 is added back: scale changes, centre stays
    close(masked_whiten(x, mask, shift_mean=False), [[4 - 3 / s, 4 - 1 / s], [4 + 1 / s, 4 + 3 / s], [0.0, 0.0]])


def test_whiten_single_valid_token_is_zero() -> None:
    # σ² = 0: (x − μ) = 0, so 0 · 1/√eps = 0 rather than nan
    out = masked_whiten(torch.tensor([[3.0, 8.0]]), torch.tensor([[True, False]]))
    assert out.tolist() == [[0.0, 0.0]]


# kl_penalized_rewards


def test_kl_penalized_rewards_rows_of_different_lengths() -> None:
    score = torch.tensor([10.0, 20.0, 30.0])
    logprobs = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -7.0, -7.0], [-1.0, -3.0, -7.0]])
    ref_logprobs = torch.tensor([[-2.0, -1.0, -0.5], [-1.0, float("-inf"), -7.0], [-3.0, -1.0, float("nan")]])
    rewards = kl_penalized_rewards(score, logprobs, ref_logprobs, MASK, beta=0.1)
    # row 0: −0.1·(−1 + 2) = −0.1, −0.1·0 = 0, −0.1·(−1 + 0.5) + 10 = 10.05
    # row 1: −0.1·(−2 + 1) + 20 = 20.1; padding 0 (the −inf there does not leak)
    # row 2: −0.1·(−1 + 3) = −0.2, −0.1·(−3 + 1) + 30 = 30.2; padding 0
    close(rewards, [[-0.1, 0.0, 10.05], [20.1, 0.0, 0.0], [-0.2, 30.2, 0.0]])


def test_kl_penalized_rewards_beta_zero_is_the_score_at_the_last_token() -> None:
    logprobs = torch.randn(3, 3)
    rewards = kl_penalized_rewards(torch.tensor([1.0, 2.0, 3.0]), logprobs, logprobs + 1, MASK, beta=0.0)
    assert rewards.tolist() == [[0.0, 0.0, 1.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]


def test_kl_penalized_rewards_sum_is_score_minus_beta_times_k1() -> None:
    torch.manual_seed(1)
    logprobs, ref_logprobs, score = torch.randn(3, 3), torch.randn(3, 3), torch.randn(3)
    rewards = kl_penalized_rewards(score, logprobs, ref_logprobs, MASK, beta=0.2)
    k1 = torch.where(MASK, logprobs - ref_logprobs, 0.0).sum(dim=1)
    torch.testing.assert_close(rewards.sum(dim=1), score - 0.2 * k1)


def test_kl_penalized_rewards_rejects_empty_row_and_wrong_score_shape() -> None:
    mask = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match="no valid token"):
        kl_penalized_rewards(torch.zeros(2), torch.zeros(2, 2), torch.zeros(2, 2), mask, beta=0.1)
    with pytest.raises(ValueError, match=r"one score per row, shape \(3,\)"):
        kl_penalized_rewards(torch.zeros(3, 1), torch.zeros(3, 3), torch.zeros(3, 3), MASK, beta=0.1)


# gae


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 7.0, 7.0], [5.0, 6.0, 7.0]])
    values = torch.tensor([[0.5, 1.0, 1.5], [2.0, 99.0, 99.0], [1.0, 2.0, 99.0]])
    advantages, returns = gae(rewards, values, MASK, gamma=1.0, lam=1.0)
    # reward-to-go: row 0 [6, 5, 3]; row 1 [4]; row 2 [11, 6] (padded rewards 7 and values 99 ignored)
    # A = reward-to-go − V: row 0 [5.5, 4, 1.5]; row 1 [2]; row 2 [10, 4]
    close(advantages, [[5.5, 4.0, 1.5], [2.0, 0.0, 0.0], [10.0, 4.0, 0.0]])
    # returns = A + V = reward-to-go
    close(returns, [[6.0, 5.0, 3.0], [4.0, 0.0, 0.0], [11.0, 6.0, 0.0]])


def test_gae_lambda_zero_is_one_step_td_error() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [5.0, 6.0, 0.0]])
    values = torch.tensor([[1.0, 2.0, 4.0], [3.0, 8.0, 8.0], [2.0, 4.0, 8.0]])
    advantages, returns = gae(rewards, values, MASK, gamma=0.5, lam=0.0)
    # δ_t = r_t + 0.5·V_{t+1} − V_t, with V = 0 after the last valid token:
    # row 0: 1 + 1 − 1 = 1, 2 + 2 − 2 = 2, 3 + 0 − 4 = −1
    # row 1: 4 + 0 − 3 = 1 (V = 8 at the padding is not bootstrapped from)
    # row 2: 5 + 2 − 2 = 5, 6 + 0 − 4 = 2
    close(advantages, [[1.0, 2.0, -1.0], [1.0, 0.0, 0.0], [5.0, 2.0, 0.0]])
    close(returns, [[2.0, 4.0, 3.0], [4.0, 0.0, 0.0], [7.0, 6.0, 0.0]])


def test_gae_matches_a_per_row_reference() -> None:
    torch.manual_seed(2)
    rewards, values = torch.randn(3, 3), torch.randn(3, 3)
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(rewards, values, MASK, gamma=gamma, lam=lam)
    for row, length in enumerate(MASK.sum(dim=1).tolist()):
        r, v = rewards[row, :length].tolist(), values[row, :length].tolist() + [0.0]
        expected, running = [0.0] * 3, 0.0
        for t in reversed(range(length)):
            running = r[t] + gamma * v[t + 1] - v[t] + gamma * lam * running
            expected[t] = running
        close(advantages[row], expected)
        valid_values = values[row, :length].tolist() + [0.0] * (3 - length)
        close(returns[row], [a + b for a, b in zip(expected, valid_values, strict=True)])


def test_gae_outputs_are_detached() -> None:
    values = torch.ones(3, 3, requires_grad=True)
    advantages, returns = gae(torch.ones(3, 3), values, MASK, gamma=1.0, lam=0.95)
    assert not advantages.requires_grad and not returns.requires_grad


# clipped_policy_loss

# ε = 0.2; four valid tokens and one padded one:
#   ρ = 1.5, A = +1: min(1.5, 1.2) = 1.2    clipped (no gradient)
#   ρ = 0.5, A = +1: min(0.5, 0.8) = 0.5    unclipped (pessimistic bound keeps the lower ρA)
#   ρ = 1.0, A = +1: min(1.0, 1.0) = 1.0    unclipped
#   ρ = 1.5, A = −1: min(−1.5, −1.2) = −1.5 unclipped
RATIOS = [[1.5, 0.5], [1.0, 1.5], [3.0, 1.0]]
ADVANTAGES = [[1.0, 1.0], [1.0, -1.0], [5.0, 5.0]]
POLICY_MASK = torch.tensor([[True, True], [True, True], [False, False]])


def policy_stats() -> tuple[PolicyLossStats, torch.Tensor]:
    logprobs = torch.log(torch.tensor(RATIOS)).requires_grad_()
    old_logprobs = torch.zeros(3, 2)
    stats = clipped_policy_loss(logprobs, old_logprobs, torch.tensor(ADVANTAGES), POLICY_MASK, clip_range=0.2)
    return stats, logprobs


def test_policy_loss_by_hand() -> None:
    stats, _ = policy_stats()
    # L = −(1.2 + 0.5 + 1.0 − 1.5) / 4 = −0.3
    assert stats.loss.item() == pytest.approx(-0.3)
    # one of four valid tokens clipped; the padded ρ = 3 is not counted
    assert float(stats.clip_fraction) == pytest.approx(0.25)
    # ½·mean (log ρ)² = ½·(ln²1.5 + ln²0.5 + 0 + ln²1.5) / 4
    expected_kl = 0.5 * (2 * math.log(1.5) ** 2 + math.log(0.5) ** 2) / 4
    assert float(stats.approx_kl) == pytest.approx(expected_kl)


def test_policy_loss_gradient() -> None:
    stats, logprobs = policy_stats()
    stats.loss.backward()
    assert logprobs.grad is not None
    # ∂L/∂log π = −ρA/4 on unclipped tokens, 0 on the clipped one and on padding:
    # [0, −0.5/4], [−1/4, 1.5/4], [0, 0]
    close(logprobs.grad, [[0.0, -0.125], [-0.25, 0.375], [0.0, 0.0]])
    assert not stats.clip_fraction.requires_grad and not stats.approx_kl.requires_grad


def test_policy_loss_on_policy_is_minus_mean_advantage() -> None:
    # ρ = 1 everywhere (the first PPO epoch): L = −mean A = −(1 + 2 + 3) / 3, nothing clipped, KL 0
    logprobs = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    stats = clipped_policy_loss(
        logprobs, logprobs.detach(), torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3, dtype=torch.bool), 0.2
    )
    assert stats.loss.item() == pytest.approx(-2.0)
    assert float(stats.clip_fraction) == 0.0 and float(stats.approx_kl) == 0.0
    stats.loss.backward()
    assert logprobs.grad is not None
    close(logprobs.grad, [[-1 / 3, -2 / 3, -1.0]])


def test_policy_loss_stats_are_frozen() -> None:
    stats, _ = policy_stats()
    with pytest.raises(AttributeError):
        stats.loss = torch.tensor(0.0)  # type: ignore[misc]


# clipped_value_loss


def test_value_loss_by_hand_and_gradient() -> None:
    values = torch.tensor([[2.5, 1.0, 9.0], [3.0, 0.0, 0.0]], requires_grad=True)
    old_values = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    returns = torch.tensor([[3.0, 2.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss = clipped_value_loss(values, old_values, returns, mask, clip_range_value=0.5)
    # ε = 0.5, V_clip = V_old + clip(V − V_old, ±0.5):
    #   V = 2.5, V_old = 1, R = 3: V_clip = 1.5; max(0.25, 2.25) = 2.25  clipped term wins, no gradient
    #   V = 1,   V_old = 1, R = 2: V_clip = 1;   max(1, 1) = 1           gradient 2(V − R) = −2
    #   V = 3,   V_old = 1, R = 2: V_clip = 1.5; max(1, 0.25) = 1        gradient 2(V − R) = 2
    # L = ½·(2.25 + 1 + 1) / 3 = 0.708333
    assert loss.item() == pytest.approx(4.25 / 6)
    loss.backward()
    assert values.grad is not None
    # ∂L/∂V = ½ · gradient / 3
    close(values.grad, [[0.0, -1 / 3, 0.0], [1 / 3, 0.0, 0.0]])


def test_value_loss_without_movement_is_half_mse() -> None:
    # V = V_old: both terms equal (V − R)²; L = ½·((1 − 3)² + (2 − 2)²) / 2 = 1
    values = torch.tensor([[1.0, 2.0]])
    loss = clipped_value_loss(values, values, torch.tensor([[3.0, 2.0]]), torch.ones(1, 2, dtype=torch.bool), 0.2)
    assert float(loss) == pytest.approx(1.0)

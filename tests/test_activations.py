"""The fused tanh-GELU swap: which modules it replaces, and that outputs move by rounding only."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from rlhf_eval.activations import composite_gelu_classes, fuse_gelu_tanh
from rlhf_eval.models import LoadOptions, load_causal_lm, load_sequence_classifier


def tanh_gelu_in_float64(x: torch.Tensor) -> torch.Tensor:
    """The formula itself, in float64 (Hendrycks & Gimpel 2016, eq. 2)."""
    x = x.double()
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def composite_count(model: torch.nn.Module) -> int:
    return sum(type(module) in composite_gelu_classes() for module in model.modules())


@pytest.mark.parametrize("activation", ["gelu_new", "gelu_fast"])
def test_swap_replaces_every_composite_and_keeps_the_logits(activation: str) -> None:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_embd=32, n_layer=3, n_head=2, n_positions=64, activation_function=activation)
    model = GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 50, (4, 12))
    with torch.inference_mode():
        before = model(ids).logits
    assert composite_count(model) == 3

    assert fuse_gelu_tanh(model) == 3
    assert composite_count(model) == 0
    assert all(block.mlp.act.approximate == "tanh" for block in model.transformer.h)
    with torch.inference_mode():
        after = model(ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    assert fuse_gelu_tanh(model) == 0  # idempotent


def test_fused_module_matches_the_formula_in_float64() -> None:
    x = torch.linspace(-12, 12, 20001)
    exact = tanh_gelu_in_float64(x)
    fused = torch.nn.GELU(approximate="tanh")(x).double()
    composite = composite_gelu_classes()[0]()(x).double()
    # each within a few float32 ulps of the float64 formula, as the composite is
    ulp = torch.finfo(torch.float32).eps * exact.abs().clamp(min=1.0)
    assert ((fused - exact).abs() <= 4 * ulp).all()
    assert ((composite - exact).abs() <= 4 * ulp).all()


def test_other_activations_are_left_alone(llama_ref: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(llama_ref)).eval()
    state = {name: module for name, module in model.named_modules()}
    assert fuse_gelu_tanh(model) == 0
    assert {name: module for name, module in model.named_modules()} == state


def test_loaders_return_fused_models(gpt2_ref: Path, reward_model_dir: Path) -> None:
    policy = load_causal_lm(gpt2_ref, LoadOptions())
    reward = load_sequence_classifier(reward_model_dir, LoadOptions())
    assert policy.config.activation_function == "gelu_new"  # the config on disk is unchanged
    assert composite_count(policy) == 0 and composite_count(reward) == 0
    assert sum(isinstance(m, torch.nn.GELU) for m in policy.modules()) == policy.config.n_layer


def test_loading_without_fusion_keeps_the_models_own_modules(gpt2_ref: Path) -> None:
    policy = load_causal_lm(gpt2_ref, LoadOptions(fused_activations=False))
    assert composite_count(policy) == policy.config.n_layer

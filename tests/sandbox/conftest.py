"""Session fixtures shared by the sandbox tests: the world, the tiny base policy and the tiny proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf_eval.sandbox.base import BASE_PRESETS, build_base_policy
from rlhf_eval.sandbox.proxy import PROXY_PRESETS, build_proxy
from rlhf_eval.sandbox.world import World, build_world


@pytest.fixture(scope="session")
def sandbox_world() -> World:
    return build_world(0)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, sandbox_world: World) -> Path:
    """The tiny preset's base policy (tokenizer + GPT-2 + sandbox.json), built once per session."""
    return build_base_policy(tmp_path_factory.mktemp("sandbox-base") / "base", sandbox_world, BASE_PRESETS["tiny"])


@pytest.fixture(scope="session")
def tiny_proxy(tmp_path_factory: pytest.TempPathFactory, sandbox_world: World, tiny_base: Path) -> Path:
    """The tiny preset's proxy reward model trained from ``tiny_base``'s samples, built once per session."""
    return build_proxy(
        tmp_path_factory.mktemp("sandbox-proxy") / "proxy", tiny_base, sandbox_world, PROXY_PRESETS["tiny"]
    )

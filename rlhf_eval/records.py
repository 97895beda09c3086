"""Typed records passed between the pipeline's stages.

Each stage takes and returns these frozen dataclasses; Arrow tables appear only at the
storage edge (``store.py``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


def content_hash(*parts: Any, length: int = 16) -> str:
    """Deterministic hex digest of JSON-serialisable parts (stable across processes).

    >>> content_hash("a", 1) == content_hash("a", 1)
    True
    >>> len(content_hash("a"))
    16
    """
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class Prompt:
    """One prompt of a suite: plain text or chat messages (``[{"role", "content"}, ...]``)."""

    prompt_id: str
    index: int
    text: str | None = None
    messages: tuple[tuple[tuple[str, str], ...], ...] | None = None
    category: str | None = None

    @property
    def messages_list(self) -> list[dict[str, str]] | None:
        """Messages as plain dicts, the shape chat templates take."""
        if self.messages is None:
            return None
        return [dict(m) for m in self.messages]

    @property
    def display_text(self) -> str:
        """Plain text of the prompt: the text, or the last user message of a chat."""
        if self.text is not None:
            return self.text
        msgs = self.messages_list or []
        users = [m.get("content", "") for m in msgs if m.get("role") == "user"]
        return users[-1] if users else (msgs[-1].get("content", "") if msgs else "")


@dataclass(frozen=True)
class GenerationDefaults:
    """Generation settings a suite may set; CLI flags override them.

    Defaults sample the policy's own distribution (temperature 1, top_p 1, top_k 0, no
    penalties), so KL from the reference is measured under the distribution sampled.
    """

    max_new_tokens: int = 64
    samples_per_prompt: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


@dataclass(frozen=True)
class Suite:
    """A versioned prompt suite, loaded and validated."""

    name: str
    version: str
    prompts: tuple[Prompt, ...]
    fingerprint: str
    source: str
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)

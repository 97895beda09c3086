"""Sampling responses from a checkpoint (the transformers backend).

The backend sits behind a narrow interface, ``GenerationBackend.generate(batch) -> batch``, so
that another engine (vLLM) can replace it without touching the rest of the pipeline.

The decoding loop is our own rather than ``model.generate``: checkpoints ship
``generation_config.json`` files with their own temperature, top-p or repetition penalty, and
KL is only right when we know exactly which distribution was sampled (``sampling.py``). Each
step runs one forward with the KV cache, processes the logits with ``processed_logprobs`` and
draws with the sample's own uniforms (``inverse_cdf_sample``). A response ends at its first
EOS (kept in the stored token ids) or after ``max_new_tokens``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rlhf_eval import faults
from rlhf_eval.attention import planless_attention
from rlhf_eval.batching import distinct
from rlhf_eval.models import as_tensor
from rlhf_eval.records import Prompt
from rlhf_eval.sampling import SamplingParams, inverse_cdf_sample, processed_logprobs, uniforms


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt's token ids under the policy's tokenizer (chat template applied if any)."""

    prompt: Prompt
    token_ids: tuple[int, ...]
    truncated: bool


@dataclass(frozen=True)
class GenerationRequest:
    """One sample to draw: which prompt, which sample index, and its seed."""

    sample_id: str
    encoded: EncodedPrompt
    sample_idx: int
    seed: int


@dataclass(frozen=True)
class GeneratedSample:
    """A drawn response: token ids up to and including the first EOS, and its text."""

    request: GenerationRequest
    token_ids: tuple[int, ...]
    text: str
    ended_eos: bool

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


class GenerationBackend(Protocol):
    """What the pipeline needs from a generation engine."""

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GeneratedSample]: ...


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the generation config's (which
    can be a list, e.g. chat models that end turns with a dedicated token)."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return sorted(ids)


def format_prompt(prompt: Prompt, tokenizer: Any) -> tuple[list[int], bool]:
    """Token ids of a prompt; chat messages go through the tokenizer's chat template when it has
    one. Returns (ids, used_template)."""
    messages = prompt.messages_list
    if messages is not None and getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"]), True
    if messages is not None:
        text = "\n".join(m.get("content", "") for m in messages) + "\n"
    else:
        text = prompt.text or ""
    return list(tokenizer(text, add_special_tokens=True)["input_ids"]), False


def encode_prompts(prompts: Sequence[Prompt], tokenizer: Any, max_prompt_tokens: int) -> list[EncodedPrompt]:
    """Encode prompts, keeping the last ``max_prompt_tokens`` of any that are longer (the end
    of a prompt, next to the response, matters most); an empty encoding gets the BOS/EOS token
    so that the first response token has a context to be predicted from."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    encoded = []
    for prompt in prompts:
        ids, _ = format_prompt(prompt, tokenizer)
        truncated = len(ids) > max_prompt_tokens
        if truncated:
            ids = ids[-max_prompt_tokens:]
        if not ids:
            ids = [int(start if start is not None else 0)]
        encoded.append(EncodedPrompt(prompt, tuple(int(i) for i in ids), truncated))
    return encoded


def plan_batches(
    requests: Sequence[GenerationRequest], max_new_tokens: int, token_budget: int, max_batch: int
) -> list[list[GenerationRequest]]:
    """Length-sorted batches whose padded size (rows x (longest prompt + max_new_tokens)) stays
    within ``token_budget``. Deterministic: the same requests always give the same batches."""
    ordered = sorted(requests, key=lambda r: (-len(r.encoded.token_ids), r.encoded.prompt.index, r.sample_idx))
    batches: list[list[GenerationRequest]] = []
    current: list[GenerationRequest] = []
    for request in ordered:
        width = (len(current[0].encoded.token_ids) if current else len(request.encoded.token_ids)) + max_new_tokens
        if current and (len(current) >= max_batch or (len(current) + 1) * width > token_budget):
            batches.append(current)
            current = []
        current.append(request)
    if current:
        batches.append(current)
    return batches


def cache_kwarg(model: Any) -> str:
    """The name under which a model's forward takes its KV cache (``cache`` since transformers 5.2x,
    ``past_key_values`` before)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned, under either name."""
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else output.get("past_key_values")


def prompt_forward(
    model: Any, prompts: Sequence[Sequence[int]], pad_id: int
) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward of left-padded prompts that keeps its KV cache (generation and the KL stage
    start from it): the output, each prompt's last logits (they predict the first response
    token), the attention mask and the position ids (explicit: left padding shifts them; ALiBi
    models such as BLOOM take none)."""
    output, mask, positions = prefix_forward(model, prompts, pad_id)
    return output, output.logits[:, -1, :], mask, positions


def takes_cache(model: Any) -> bool:
    """Whether a model's forward takes and returns a KV cache (``use_cache`` and a cache argument)."""
    accepted = inspect.signature(model.forward).parameters
    return "use_cache" in accepted and ("cache" in accepted or "past_key_values" in accepted)


def prefix_forward(
    model: Any, prefixes: Sequence[Sequence[int]], pad_id: int
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """One forward of left-padded token prefixes that keeps its KV cache, for continuations to
    start from (``continuation_forward``): the output, the attention mask and the position ids.
    A causal LM computes only its last position's logits where it can (``logits_to_keep``)."""
    device = model.device
    ids, mask = as_tensor([list(p) for p in prefixes], pad_id, left=True)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    accepted = inspect.signature(model.forward).parameters
    extra: dict[str, Any] = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
    if "position_ids" in accepted:
        extra["position_ids"] = positions
    output = model(input_ids=ids, attention_mask=mask, use_cache=True, **extra)
    return output, mask, positions


def cache_rows(cache: Any, index: torch.Tensor) -> Any:
    """A new cache holding the rows ``index`` of ``cache`` (which is left as it is): the forward
    that reads it appends to it."""
    if hasattr(cache, "layers"):  # transformers' Cache: layers reassign their tensors when selecting
        chunk = copy.copy(cache)
        chunk.layers = [copy.copy(layer) for layer in cache.layers]
    else:
        chunk = copy.deepcopy(cache)
    chunk.batch_select_indices(index)
    return chunk


def continuation_forward(
    model: Any,
    cache: Any,
    prefix_mask: torch.Tensor,
    rows: torch.Tensor,
    continuations: Sequence[Sequence[int]],
    pad_id: int,
) -> Any:
    """One forward of right-padded ``continuations``, each on a copy of its prefix's cache row
    (``rows`` index the prefixes of ``prefix_forward``): positions continue from each prefix's
    length, and the attention mask is the prefix's (left-padded) followed by the continuation's."""
    device = model.device
    ids, mask = as_tensor([list(c) for c in continuations], pad_id, left=False)
    ids, mask = ids.to(device), mask.to(device)
    accepted = inspect.signature(model.forward).parameters
    extra: dict[str, Any] = {cache_kwarg(model): cache_rows(cache, rows)}
    if "position_ids" in accepted:
        start = prefix_mask[rows].sum(-1, keepdim=True)
        extra["position_ids"] = start + torch.arange(ids.shape[1], device=device).unsqueeze(0)
    return model(input_ids=ids, attention_mask=torch.cat([prefix_mask[rows], mask], dim=1), use_cache=True, **extra)


def prune_now(finished: int, active: int) -> bool:
    """Drop finished rows from the batch once they are an eighth of it: each drop copies the KV
    cache, so it is done when it saves at least that much of every following step.

    >>> prune_now(0, 64), prune_now(7, 64), prune_now(8, 64), prune_now(1, 1)
    (False, False, True, True)
    """
    return finished > 0 and finished * 8 >= active


class TransformersBackend:
    """Batched sampling with a transformers causal LM and its KV cache."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        params: SamplingParams,
        *,
        token_budget: int = 16384,
        max_batch: int = 256,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.params = params
        self.token_budget = token_budget
        self.max_batch = max_batch
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0])
        self.cache_kwarg = cache_kwarg(model)
        # left padding shifts positions; models with position embeddings need them explicitly
        # (ALiBi models such as BLOOM take none)
        self.takes_positions = "position_ids" in inspect.signature(model.forward).parameters

    def plan(self, requests: Sequence[GenerationRequest]) -> list[list[GenerationRequest]]:
        return plan_batches(requests, self.params.max_new_tokens, self.token_budget, self.max_batch)

    @torch.inference_mode()
    def generate(self, batch: Sequence[GenerationRequest]) -> list[GeneratedSample]:
        with planless_attention(self.model.device):  # every step has a new key length
            return self._generate(batch)

    def _generate(self, batch: Sequence[GenerationRequest]) -> list[GeneratedSample]:
        device = self.model.device
        steps = self.params.max_new_tokens
        output, logits, mask, next_position = self._prefill(batch)
        draws = torch.stack([uniforms(r.seed, steps) for r in batch]).to(device)  # indexed by `keep` below
        eos = torch.tensor(self.eos_ids, device=device)
        # rows still sampling (indices into the batch); finished rows leave the batch, their
        # cache rows with them, so the steps after a short answer cost nothing for it
        active = torch.arange(len(batch), device=device)
        finished = torch.zeros(len(batch), dtype=torch.bool, device=device)
        generated = torch.full((len(batch), steps), self.pad_id, dtype=torch.long, device=device)
        for step in range(steps):
            logprobs = processed_logprobs(logits, self.params)
            token = inverse_cdf_sample(logprobs, draws[:, step]).to(device)
            token = torch.where(finished, torch.full_like(token, self.pad_id), token)
            generated[active, step] = token
            finished |= torch.isin(token, eos)
            faults.reach("generate.step")
            if bool(finished.all()) or step == steps - 1:
                break
            cache = output_cache(output)
            if prune_now(int(finished.sum()), len(active)) and hasattr(cache, "batch_select_indices"):
                keep = (~finished).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                active, token, mask = active[keep], token[keep], mask[keep]
                draws, next_position, finished = draws[keep], next_position[keep], finished[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            step_inputs: dict[str, Any] = {self.cache_kwarg: cache}
            if self.takes_positions:
                step_inputs["position_ids"] = next_position.unsqueeze(-1)
            output = self.model(input_ids=token.unsqueeze(-1), attention_mask=mask, use_cache=True, **step_inputs)
            logits = output.logits[:, -1, :]
            next_position = next_position + 1
        rows = generated.cpu().tolist()
        return [self._finish(request, row) for request, row in zip(batch, rows, strict=True)]

    def _prefill(self, batch: Sequence[GenerationRequest]) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward over the batch's prompts, each distinct prompt once: the samples of a
        prompt share its KV cache rows (copied to each sample after the forward), so a prompt
        with k samples costs one prompt forward instead of k. Returns the forward's output (its
        cache holding one row per sample), the next-token logits, the attention mask and the
        next position of every sample."""
        prompts, rows = distinct([r.encoded.token_ids for r in batch])
        output, logits, mask, positions = prompt_forward(self.model, prompts, self.pad_id)
        if len(prompts) < len(batch):
            cache = output_cache(output)
            if not hasattr(cache, "batch_select_indices"):  # a cache that cannot copy its rows
                output, logits, mask, positions = prompt_forward(
                    self.model, [r.encoded.token_ids for r in batch], self.pad_id
                )
            else:
                index = torch.tensor(rows, device=self.model.device)
                cache.batch_select_indices(index)
                logits, mask, positions = logits[index], mask[index], positions[index]
        return output, logits, mask, positions[:, -1] + 1

    def _finish(self, request: GenerationRequest, row: list[int]) -> GeneratedSample:
        eos = set(self.eos_ids)
        end = next((i for i, token in enumerate(row) if token in eos), None)
        token_ids = row if end is None else row[: end + 1]
        body = token_ids if end is None else token_ids[:-1]
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        return GeneratedSample(request, tuple(int(t) for t in token_ids), text, end is not None)

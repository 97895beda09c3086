"""Training loops for the tiny models.

- ``finetune_causal_lm``: plain torch, fp32, AdamW on the next-token loss;
- ``train_bradley_terry``: a reward model learns to score the chosen text of each pair above
  the rejected one, loss -log sigmoid(r_chosen - r_rejected) (Bradley and Terry 1952; the loss
  of TRL's ``RewardTrainer``);
- ``build_trainer_run``: a real ``transformers.Trainer`` run, which writes the directory layout
  that Trainer and TRL users have (``checkpoint-N/`` with ``trainer_state.json``, the final model
  at the root), optionally with TRL-style metrics in its logs and a TRL model card.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Method -> (model-card tag, name in the "trained with" line), as TRL's trainers write them.
TRL_CARD_METHODS = {
    "ppo": ("ppo", "PPO"),
    "dpo": ("dpo", "DPO"),
    "grpo": ("grpo", "GRPO"),
    "rloo": ("rloo", "RLOO"),
    "online_dpo": ("online-dpo", "Online DPO"),
    "kto": ("kto", "KTO"),
    "orpo": ("orpo", "ORPO"),
    "cpo": ("cpo", "CPO"),
    "sft": ("sft", "SFT"),
    "reward": ("reward-trainer", "Reward"),
}


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load reports (unexpected keys and the like)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block. Tiny models have too little work per op to
    split: a second thread mostly waits, and on a busy machine it makes training several times
    slower (60 steps of the demo's reference: 5 s on one thread, 24 s on two, two cores under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id rows into (ids, attention mask) tensors."""
    import torch

    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def encode_with_eos(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text followed by the EOS token, so a model learns where answers end."""
    if not texts:
        raise ValueError("no texts to train on; pass at least one text")
    return [list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id] for text in texts]


def causal_lm_collator(pad_id: int) -> Callable[[list[dict[str, list[int]]]], dict[str, torch.Tensor]]:
    """Batches of ``{"input_ids": [...]}`` rows -> right-padded ids, mask, and labels (-100 on padding)."""

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_right([row["input_ids"] for row in batch], pad_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    return collate


def load_causal_lm_and_tokenizer(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), use_safetensors=True, dtype=torch.float32)
    return model, tokenizer


def save_model_and_tokenizer(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """``save_pretrained`` both into ``out_dir`` (transformers 5 always writes safetensors)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
    return out_dir


def finetune_causal_lm(
    src_dir: Path | str,
    out_dir: Path | str,
    texts: Sequence[str],
    *,
    steps: int,
    lr: float = 1e-2,
    seed: int = 0,
    batch_size: int = 16,
) -> Path:
    """Fine-tune the causal LM in ``src_dir`` on ``texts`` (EOS appended) and save it with its
    tokenizer to ``out_dir``. Each step draws ``batch_size`` texts (all of them when fewer),
    fp32, AdamW, mean next-token cross-entropy over the non-padding tokens."""
    import torch

    if steps < 1:
        raise ValueError(f"steps={steps}: fine-tuning needs at least one step")
    model, tokenizer = load_causal_lm_and_tokenizer(Path(src_dir))
    rows = encode_with_eos(tokenizer, texts)
    collate = causal_lm_collator(int(tokenizer.pad_token_id))
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    with quiet_transformers(), one_thread():  # quiet: the first forward with labels reports its loss
        for _ in range(steps):
            batch = rows if len(rows) <= batch_size else rng.sample(rows, batch_size)
            loss = model(**collate([{"input_ids": row} for row in batch])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return save_model_and_tokenizer(model.eval(), tokenizer, Path(out_dir))


def train_bradley_terry(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    steps: int,
    lr: float = 1e-2,
    seed: int = 0,
    batch_size: int = 16,
) -> list[float]:
    """Train a one-output sequence classifier in place on (chosen, rejected) text pairs with the
    Bradley-Terry loss -log sigmoid(r_c - r_r), batch mean. Returns the loss of each step.
    Texts are tokenized as the harness scores them (no special tokens added, right padding)."""
    import torch

    if not pairs:
        raise ValueError("no (chosen, rejected) pairs to train on")
    encoded = [
        (
            tokenizer(c, add_special_tokens=False)["input_ids"],
            tokenizer(r, add_special_tokens=False)["input_ids"],
        )
        for c, r in pairs
    ]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    model.train()
    with one_thread():
        for _ in range(steps):
            batch = encoded if len(encoded) <= batch_size else rng.sample(encoded, batch_size)
            ids, mask = pad_right([c for c, _ in batch] + [r for _, r in batch], int(tokenizer.pad_token_id))
            rewards = model(input_ids=ids, attention_mask=mask).logits[:, 0]
            chosen, rejected = rewards[: len(batch)], rewards[len(batch) :]
            loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def write_trl_model_card(out_dir: Path, method: str, base_model: str) -> Path:
    """A README.md as TRL's trainers write it: YAML front matter whose tags name the method,
    and a "This model was trained with <METHOD>" line."""
    if method not in TRL_CARD_METHODS:
        raise ValueError(f"card_method={method!r}: unknown; use one of {', '.join(sorted(TRL_CARD_METHODS))}")
    tag, name = TRL_CARD_METHODS[method]
    card = (
        "---\n"
        f"base_model: {base_model}\n"
        "library_name: transformers\n"
        f"model_name: {out_dir.name}\n"
        "tags:\n- generated_from_trainer\n- trl\n"
        f"- {tag}\n"
        "licence: license\n"
        "---\n\n"
        f"# Model Card for {out_dir.name}\n\n"
        f"This model is a fine-tuned version of {base_model}.\n"
        "It has been trained using [TRL](https://github.com/huggingface/trl).\n\n"
        "## Training procedure\n\n"
        f"This model was trained with {name}.\n"
    )
    path = out_dir / "README.md"
    path.write_text(card, encoding="utf-8")
    return path


def build_trainer_run(
    out_dir: Path | str,
    base_dir: Path | str,
    texts: Sequence[str],
    *,
    save_steps: int,
    max_steps: int,
    seed: int = 0,
    lr: float = 1e-2,
    batch_size: int = 4,
    extra_logs: Callable[[int], Mapping[str, float]] | None = None,
    card_method: str | None = None,
    in_order: bool = False,
) -> Path:
    """Fine-tune ``base_dir`` on ``texts`` with a real ``transformers.Trainer`` (fp32 on the CPU,
    a log entry per step) and keep what it writes: ``checkpoint-N/`` every ``save_steps`` with
    weights, tokenizer and ``trainer_state.json`` (and Trainer's pickles: optimizer.pt,
    scheduler.pt, rng_state.pth, training_args.bin), then the final model and state at the root.

    ``extra_logs(step)`` adds metrics to each step's log entry, e.g. ``{"objective/kl": ...}`` as
    TRL's PPO logs it; ``card_method`` (e.g. ``"ppo"``) writes TRL's model card at the root.
    ``in_order`` feeds the texts in their order (a curriculum) instead of shuffled.
    """
    import torch
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    out = Path(out_dir)
    if card_method is not None and card_method not in TRL_CARD_METHODS:
        raise ValueError(f"card_method={card_method!r}: unknown; use one of {', '.join(sorted(TRL_CARD_METHODS))}")
    model, tokenizer = load_causal_lm_and_tokenizer(Path(base_dir))
    rows = encode_with_eos(tokenizer, texts)

    class TextRows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, index: int) -> dict[str, list[int]]:
            return {"input_ids": rows[index]}

    class ExtraLogs(TrainerCallback):
        """Adds the caller's metrics to each training-step log (not to the final summary)."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if extra_logs is None or logs is None or "loss" not in logs:
                return
            extra = {name: float(value) for name, value in extra_logs(state.global_step).items()}
            logs.update(extra)
            last = state.log_history[-1] if state.log_history else None
            if last is not None and last.get("step") == state.global_step and "loss" in last:
                last.update(extra)  # Trainer.log appends to log_history before calling on_log

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        save_steps=save_steps,
        save_strategy="steps",
        logging_steps=1,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        lr_scheduler_type="constant",
        seed=seed,
        data_seed=seed,
        train_sampling_strategy="sequential" if in_order else "random",
        use_cpu=True,
        bf16=False,
        fp16=False,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    with quiet_transformers(), one_thread():
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=TextRows(),
            data_collator=causal_lm_collator(int(tokenizer.pad_token_id)),
            processing_class=tokenizer,
            callbacks=[ExtraLogs()],
        )
        trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
        trainer.train()
        trainer.save_model(str(out))
        trainer.save_state()
    if card_method is not None:
        write_trl_model_card(out, card_method, str(Path(base_dir).resolve()))
    return out

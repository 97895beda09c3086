"""``RlhfEvalCallback``: evaluate each checkpoint from inside a ``transformers.Trainer`` (and so any
TRL trainer) as soon as it is saved, update the over-optimization analysis, and optionally stop
training when gold reward turns.

The step is the one ``rlhf-eval watch`` runs (``watch.RunMonitor``): the trainer's ``output_dir``
is evaluated like ``rlhf-eval eval OUTPUT_DIR``, restricted to its complete ``checkpoint-N``
folders, so the database ends up the same as with a watcher or a later ``eval``. ``on_save``
runs after Trainer has written the whole checkpoint (``trainer_state.json`` last), so no settle
period is needed. Only the main process evaluates; the others wait at their next collective
operation, so keep the suite small or run ``rlhf-eval watch`` in another process instead.

This module imports ``transformers`` at the top: only training code imports it, never
``import rlhf_eval`` or the CLI.

Example with TRL::

    from trl import GRPOConfig, GRPOTrainer
    from rlhf_eval.callback import RlhfEvalCallback

    trainer = GRPOTrainer(
        model="models/sft",
        reward_funcs=proxy_reward,
        args=GRPOConfig(output_dir="runs/grpo", save_steps=50),
        train_dataset=dataset,
        callbacks=[
            RlhfEvalCallback(
                ref="models/sft", suite="suites/default.yaml", proxy="models/proxy-rm",
                gold="my_rubric.py:score", db="rlhf_eval.duckdb", samples=4, stop_on_alert=True,
            )
        ],
    )
    trainer.train()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rlhf_eval.analysis.runner import AnalysisOptions
from rlhf_eval.checkpoint_ready import why_not_ready
from rlhf_eval.errors import RlhfEvalError, UserInputError, did_you_mean
from rlhf_eval.pipeline import EvalConfig, log
from rlhf_eval.watch import (
    ALERT_SIGNALS,
    Alert,
    RunMonitor,
    Scanner,
    Update,
    fmt,
    parse_signals,
    preflight,
    summary_events,
)

#: EvalConfig fields the callback sets itself.
FIXED_FIELDS = ("paths", "ref", "suite", "proxy", "gold", "db", "checkpoints", "progress")


def as_tuple(value: str | Sequence[str], what: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items:
        raise UserInputError(f"RlhfEvalCallback({what}=...): give at least one reward model dir or module:function")
    return items


class RlhfEvalCallback(TrainerCallback):
    """Evaluate every saved checkpoint on a prompt suite, store it, analyse the run, and alert.

    ``ref``, ``suite``, ``proxy``, ``gold`` and ``db`` are ``rlhf-eval eval``'s options;
    ``**options`` takes any other ``EvalConfig`` field (``samples``, ``limit``, ``method``, ``run``,
    ``max_new_tokens``, ``seed``, ``ensemble``, ...). With ``stop_on_alert``, training stops
    (``control.should_training_stop``) when the early warning fires or the run turns
    over-optimized. ``alerts`` and ``updates`` keep what happened, for the training script.

    Bad options fail in ``on_train_begin``, before the first step. An evaluation that fails later
    (a locked database, a checkpoint the harness cannot load) is logged and kept in ``errors``;
    training goes on, since losing a run to its monitor would cost more than a missing point.
    """

    def __init__(
        self,
        *,
        ref: str,
        suite: str,
        proxy: str | Sequence[str],
        gold: str | Sequence[str],
        db: str = "rlhf_eval.duckdb",
        stop_on_alert: bool = False,
        analysis: AnalysisOptions | None = None,
        alert_on: Sequence[str] = ALERT_SIGNALS,
        **options: Any,
    ) -> None:
        allowed = [f.name for f in dataclasses.fields(EvalConfig) if f.name not in FIXED_FIELDS]
        for name in options:
            if name not in allowed:
                raise UserInputError(
                    f"RlhfEvalCallback({name}=...): not an evaluation option.{did_you_mean(name, allowed)} "
                    f"Use one of: {', '.join(allowed)}"
                )
        self.template = EvalConfig(
            paths=("",),
            ref=ref,
            suite=suite,
            proxy=as_tuple(proxy, "proxy"),
            gold=as_tuple(gold, "gold"),
            db=db,
            progress=False,
            **options,
        )
        self.stop_on_alert = stop_on_alert
        self.analysis = analysis
        self.alert_on = parse_signals(",".join(alert_on))
        self.monitor: RunMonitor | None = None
        self.alerts: list[Alert] = []
        self.updates: list[Update] = []
        self.errors: list[str] = []

    def monitor_for(self, output_dir: str) -> RunMonitor:
        path = str(Path(output_dir))
        if self.monitor is None or self.monitor.eval_config.paths != (path,):
            self.monitor = RunMonitor(dataclasses.replace(self.template, paths=(path,)), self.analysis, self.alert_on)
        return self.monitor

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if state.is_world_process_zero and args.output_dir:
            preflight(dataclasses.replace(self.template, paths=(str(args.output_dir),)))
        return control

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if not state.is_world_process_zero:
            return control
        if not args.output_dir:
            return control
        run_dir = Path(args.output_dir)
        name = f"checkpoint-{state.global_step}"
        reason = why_not_ready(run_dir / name, settle=0)
        if reason:
            log(f"rlhf-eval: not evaluating {reason}")
            return control
        ready = Scanner(run_dir, settle=0).scan().ready
        try:
            update = self.monitor_for(str(run_dir)).update([n for n in ready if n.startswith("checkpoint-")])
        except RlhfEvalError as exc:
            self.errors.append(f"{name}: {exc}")
            log(f"rlhf-eval: evaluating {name} failed, training goes on: {exc}")
            return control
        self.updates.append(update)
        for event in summary_events(update, [name]):
            log(
                f"rlhf-eval: {update.run}/{name} (step {event['step']}): KL {fmt(event.get('kl'))}, "
                f"proxy {fmt(event.get('proxy_reward'))}, gold {fmt(event.get('gold_reward'))} -> {self.template.db}"
            )
        if update.verdict is not None:
            log(f"rlhf-eval: {update.run}: {update.verdict.get('evidence')}")
        for alert in update.alerts:
            self.alerts.append(alert)
            log(alert.line())
        if update.alerts and self.stop_on_alert:
            log("rlhf-eval: stopping training (stop_on_alert)")
            control.should_training_stop = True
        return control

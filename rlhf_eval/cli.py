"""The ``rlhf-eval`` command line: parse flags, build one config, call one library function.

Data goes to stdout (tables, or JSON with ``--json``); logs and progress bars go to stderr.
Domain errors become one line on stderr and exit code 2. Heavy libraries are imported inside
the commands so that ``rlhf-eval --help`` starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from rlhf_eval.errors import RlhfEvalError, UserInputError

app = typer.Typer(
    name="rlhf-eval",
    help="Evaluate RLHF checkpoints: proxy vs gold reward against KL, symptoms, over-optimization.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

SUMMARY_COLUMNS = (
    ("run", "run", "s"),
    ("checkpoint", "checkpoint", "s"),
    ("step", "step", "d"),
    ("method", "method", "s"),
    ("n_samples", "n", "d"),
    ("kl", "KL", ".3f"),
    ("proxy_reward", "proxy", ".3f"),
    ("gold_reward", "gold", ".3f"),
    ("mean_length", "len", ".1f"),
    ("seq_rep_4", "rep4", ".3f"),
    ("hedge_rate", "hedge", ".2f"),
)


def domain_errors(func: F) -> F:
    """Turn the library's domain errors into one line on stderr and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RlhfEvalError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def format_cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "s":
        return str(value)
    return format(value, fmt)


def print_summary(rows: Sequence[dict[str, Any]]) -> None:
    """The checkpoint summary as a fixed-width table on stdout."""
    header = [title for _, title, _ in SUMMARY_COLUMNS]
    body = [[format_cell(row.get(key), fmt) for key, _, fmt in SUMMARY_COLUMNS] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    numeric = [fmt != "s" for _, _, fmt in SUMMARY_COLUMNS]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True))

    typer.echo(line(header))
    typer.echo("  ".join("-" * w for w in widths))
    for cells in body:
        typer.echo(line(cells))


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, allow_nan=False))


def jsonable(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN has no JSON spelling: write it as null."""
    clean = []
    for row in rows:
        clean.append({k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()})
    return clean


def report_work(result: Any, db: str) -> None:
    """One line on stderr saying what the evaluation computed (zeros on a cached rerun)."""
    stats = result.stats
    typer.echo(
        f"evaluated {len(result.summary)} checkpoints in {len(result.runs)} runs: generated "
        f"{stats.samples_generated} samples, {stats.kl_computed} KL, {stats.scores_computed} scores, "
        f"{stats.features_computed} feature rows; {stats.null_scores} NaN/inf scores stored as NULL; "
        f"waited {stats.lock_wait_seconds:.2f} s for readers -> {db}",
        err=True,
    )


@app.command("eval")
@domain_errors
def eval_command(
    paths: Annotated[list[str], typer.Argument(help="Checkpoint dirs, Trainer/TRL run dirs, adapter dirs.")],
    ref: Annotated[str, typer.Option("--ref", help="Reference (starting) policy: dir or hub id.")],
    suite: Annotated[str, typer.Option("--suite", help="Suite YAML (or a .jsonl/.parquet/.csv of prompts).")],
    proxy: Annotated[list[str], typer.Option("--proxy", help="Proxy scorer: RM dir/hub id, or module:function.")],
    gold: Annotated[list[str], typer.Option("--gold", help="Gold scorer (repeat for an ensemble).")],
    samples: Annotated[int | None, typer.Option("--samples", help="Samples per prompt (suite default).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N prompts (smoke runs).")] = None,
    db: Annotated[str, typer.Option("--db", help="DuckDB file.")] = "rlhf_eval.duckdb",
    as_json: Annotated[bool, typer.Option("--json", help="Print this run's checkpoint_summary rows as JSON.")] = False,
    method: Annotated[
        str | None, typer.Option("--method", help="Override the inferred method (ppo, dpo, ...).")
    ] = None,
    base: Annotated[str | None, typer.Option("--base", help="Base model of LoRA/PEFT adapters.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Group plain model dirs into one run of this name.")] = None,
    ensemble: Annotated[str, typer.Option("--ensemble", help="mean | min | uwo[:lambda]")] = "mean",
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Load pickle (.bin) weights: runs code from the file.")
    ] = False,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Run custom model code shipped with a checkpoint.")
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
) -> None:
    """Discover checkpoints under PATHS, sample them on a suite, score, estimate KL, store."""
    from rlhf_eval.pipeline import EvalConfig, evaluate

    if allow_pickle:
        typer.echo(
            "warning: --allow-pickle loads pickle weights, which can execute arbitrary code; "
            "use it only for checkpoints you trust",
            err=True,
        )
    config = EvalConfig(
        paths=tuple(paths),
        ref=ref,
        suite=suite,
        proxy=tuple(proxy),
        gold=tuple(gold),
        db=db,
        samples=samples,
        limit=limit,
        method=method,
        base=base,
        run=run,
        ensemble=ensemble,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        progress=not no_progress and sys.stderr.isatty(),
    )
    result = evaluate(config)
    report_work(result, db)
    if as_json:
        print_json(jsonable(result.summary))
    else:
        print_summary(result.summary)


@app.command("validate")
@domain_errors
def validate_command(
    suites: Annotated[list[str], typer.Argument(help="Suite YAML files (or prompt data files).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
) -> None:
    """Check suites before any model is loaded: schema, data, prompts."""
    from dataclasses import asdict

    from rlhf_eval.suites import validate_suite

    reports = [validate_suite(path) for path in suites]
    if as_json:
        print_json([asdict(r) for r in reports])
        return
    for path, report in zip(suites, reports, strict=True):
        typer.echo(
            f"{path}: ok: {report.name} v{report.version}, {report.n_prompts} prompts, fingerprint {report.fingerprint}"
        )
        for warning in report.warnings:
            typer.echo(f"  warning: {warning}")


@app.command("demo")
@domain_errors
def demo_command(
    db: Annotated[str, typer.Option("--db", help="DuckDB file for the demo.")] = "rlhf_eval.duckdb",
    out: Annotated[Path, typer.Option("--out", help="Where the sandbox is built.")] = Path("checkpoints/sandbox"),
    preset: Annotated[str, typer.Option("--preset", help="Sandbox preset: demo | tiny.")] = "demo",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sandbox world and every run.")] = 0,
    no_dashboard: Annotated[bool, typer.Option("--no-dashboard", help="Do not serve a dashboard.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary and the checks as JSON.")] = False,
) -> None:
    """Build the offline sandbox (if missing), evaluate every run in it and check over-optimization."""
    from rlhf_eval.demo import run_demo

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_preset(preset)
    result = run_demo(Path(out), db, preset=preset, seed=seed, progress=sys.stderr.isatty())
    report_work(result.runs, db)
    report_work(result.pool, db)
    if as_json:
        print_json(
            {
                "summary": jsonable([*result.runs.summary, *result.pool.summary]),
                "checks": [check.as_dict() for check in result.checks],
            }
        )
        return
    print_summary(result.runs.summary)
    typer.echo("")
    print_checks(result.checks)


CHECK_COLUMNS = (
    "run",
    "spearman(proxy,KL)",
    "peak",
    "peak KL",
    "gold drop [95% CI]",
    "symptoms peak -> last",
    "over-opt",
)


def print_checks(checks: Sequence[Any]) -> None:
    """The over-optimization checks as a table: one row per run."""
    rows = []
    for check in checks:
        low, high = check.gold_drop_ci
        symptoms = ", ".join(f"{name} {peak:.2f}->{last:.2f}" for name, (peak, last) in check.symptoms.items())
        rows.append(
            (
                check.run,
                f"{check.proxy_kl_spearman:.2f}",
                f"{check.peak}{'' if check.peak_interior else ' (edge)'}",
                f"{check.peak_kl:.2f}",
                f"{check.gold_drop:.2f} [{low:.2f}, {high:.2f}]",
                symptoms,
                "yes" if check.passed() else "no",
            )
        )
    widths = [max(len(str(r[i])) for r in [CHECK_COLUMNS, *rows]) for i in range(len(CHECK_COLUMNS))]
    for row in [CHECK_COLUMNS, tuple("-" * w for w in widths), *rows]:
        typer.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def check_preset(preset: str) -> None:
    """A known preset, and TRL installed (the sandbox trains with it), or a one-line error."""
    import importlib.util

    from rlhf_eval.errors import did_you_mean

    presets = ("demo", "tiny")
    if preset not in presets:
        raise UserInputError(f"--preset {preset!r}: unknown preset; use demo or tiny.{did_you_mean(preset, presets)}")
    if importlib.util.find_spec("trl") is None:
        raise UserInputError(
            "the sandbox trains its runs with TRL, which is not installed: pip install 'rlhf-eval[sandbox]'"
        )


sandbox_app = typer.Typer(help="The offline sandbox: an RLHF world that really over-optimizes.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("build")
@domain_errors
def sandbox_build_command(
    out: Annotated[Path, typer.Option("--out", help="Build directory.")] = Path("checkpoints/sandbox"),
    preset: Annotated[str, typer.Option("--preset", help="demo (a few minutes) | tiny (seconds, for tests).")] = "demo",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the world and every run.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print build.json.")] = False,
) -> None:
    """Build the sandbox: base policy, proxy RM, PPO, GRPO and DPO (+LoRA) runs, evaluation prompts."""
    from rlhf_eval.sandbox.build import build_sandbox

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_preset(preset)
    try:
        sandbox = build_sandbox(out, preset, seed)
    except FileExistsError as exc:
        raise UserInputError(str(exc)) from None
    if as_json:
        print_json(sandbox.record)
        return
    metrics = sandbox.record["proxy_metrics"]
    typer.echo(f"sandbox ({preset}, seed {seed}) in {out}")
    typer.echo(
        f"  proxy: held-out pairwise accuracy vs gold {metrics['held_out_accuracy']:.3f}, "
        f"Spearman(score, length) {metrics['held_out_length_correlation']:+.2f}"
    )
    for name, seconds in sandbox.record["seconds"].items():
        typer.echo(f"  {name}: {seconds:.1f} s")
    typer.echo(
        f"evaluate: rlhf-eval eval {sandbox.runs} --ref {sandbox.base} --suite {sandbox.prompts} "
        f"--proxy {sandbox.proxy} --gold {sandbox.gold}"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()

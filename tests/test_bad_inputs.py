"""Bad input, table-driven: every case is one command a user could type with one thing wrong in
its checkpoints, tokenizers, suite, scorers, arguments, database or gate policy. Each must end
with exit code 2 and one line on stderr (``error: ...``) that names the file or argument and
the fix, and must leave the database exactly as it was. docs/errors.md lists the same table."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_cli_eval import base_args, corrupt_copy, no_tokenizer_copy, run_cli, snapshot


@dataclass
class World:
    """What a case builds its command from: a copy of an evaluated database and the tiny models."""

    tmp: Path
    db: Path
    suite: Path
    gold: Path
    ref: Path
    policy: Path
    llama: Path
    rm: Path
    rm_two_labels: Path
    pickle_only: Path

    def eval(self, *extra: str, policy: str | None = None, suite: str | None = None, proxy: str | None = None,
             gold: str | None = None) -> list[str]:  # fmt: skip
        args = base_args(self.db, Path(suite or self.suite), self.ref, Path(proxy or self.rm), self.gold)
        if gold is not None:
            args[args.index("--gold") + 1] = gold
        return ["eval", policy or str(self.policy), "--run", "r", *args, *extra]

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return str(path)

    def model_copy(self, name: str, change: Callable[[Path], None]) -> str:
        path = self.tmp / name
        shutil.copytree(self.policy, path)
        change(path)
        return str(path)

    def gate(self, policy: str, *extra: str) -> list[str]:
        return ["gate", "--policy", policy, "--db", str(self.db), *extra]


GOOD_POLICY = "version: 1\nrules:\n  - name: kl\n    metric: kl\n    max: 10\n"
LINES = "\n".join(json.dumps({"prompt": p}) for p in ("one two", "three four")) + "\n"


def symlink_loop(tmp: Path) -> str:
    loop = tmp / "loop"
    loop.mkdir()
    os.symlink(loop, loop / "again")
    os.symlink(tmp / "a", tmp / "b")
    os.symlink(tmp / "b", tmp / "a")
    return str(tmp / "a")


CASES: dict[str, tuple[Callable[[World], list[str]], str]] = {
    # checkpoints
    "checkpoint path missing": (lambda w: w.eval(policy=str(w.tmp / "nowhere")), "path does not exist"),
    "checkpoint dir empty": (
        lambda w: w.eval(policy=str((w.tmp / "empty").mkdir() or w.tmp / "empty")),
        "empty: no model found",
    ),
    "safetensors truncated": (
        lambda w: w.eval(policy=str(corrupt_copy(w.policy, w.tmp / "cut"))),
        "model.safetensors: truncated safetensors file",
    ),
    "config.json not JSON": (
        lambda w: w.eval(policy=w.model_copy("badcfg", lambda p: (p / "config.json").write_text("{nope"))),
        "config.json: invalid JSON",
    ),
    "pickle weights without --allow-pickle": (lambda w: w.eval(policy=str(w.pickle_only)), "or pass --allow-pickle"),
    "checkpoint path a symlink loop": (lambda w: w.eval(policy=symlink_loop(w.tmp)), "a: path does not exist"),
    "custom code without --trust-remote-code": (
        lambda w: w.eval(policy=w.model_copy("remote", lambda p: (p / "config.json").write_text(json.dumps(
            {**json.loads((p / "config.json").read_text()), "auto_map": {"AutoModelForCausalLM": "x.Y"}})))),
        "--trust-remote-code",
    ),  # fmt: skip
    # tokenizers
    "tokenizer missing": (
        lambda w: w.eval(policy=str(no_tokenizer_copy(w.policy, w.tmp / "notok"))),
        "notok: no tokenizer found",
    ),
    "tokenizer differs from the reference's": (lambda w: w.eval(policy=str(w.llama)), "tokenizer differs"),
    "tokenizer.json not JSON": (
        lambda w: w.eval(policy=w.model_copy("badtok", lambda p: (p / "tokenizer.json").write_text("{nope"))),
        "tokenizer",
    ),
    # suites
    "suite file missing": (lambda w: w.eval(suite=str(w.tmp / "none.jsonl")), "none.jsonl: no such file"),
    "suite empty": (lambda w: w.eval(suite=w.file("e.jsonl", "")), "empty"),
    "suite unknown extension": (lambda w: w.eval(suite=w.file("p.txt", "hello\n")), "unknown extension"),
    "suite not UTF-8": (lambda w: w.eval(suite=w.file("latin.jsonl", b'{"prompt": "caf\xe9"}\n')), "UTF-8"),
    "suite line not JSON": (lambda w: w.eval(suite=w.file("bad.jsonl", LINES + "{nope\n")), "line 3"),
    "suite line not an object": (lambda w: w.eval(suite=w.file("arr.jsonl", "[1, 2]\n")), "not a JSON object"),
    "suite duplicate prompts": (lambda w: w.eval(suite=w.file("dup.jsonl", LINES + LINES)), "duplicate"),
    "suite duplicate ids": (
        lambda w: w.eval(suite=w.file("ids.jsonl", '{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')),
        "duplicate",
    ),
    "suite YAML without version": (
        lambda w: w.eval(suite=w.file("s.yaml", f"name: s\nsource:\n  path: {w.suite}\n")), "version"),
    "suite YAML not YAML": (
        lambda w: w.eval(suite=w.file("t.yaml", "name: [unclosed\n")),
        "t.yaml: invalid YAML at line 2",
    ),
    "suite prompt column missing": (
        lambda w: w.eval(suite=w.file("col.jsonl", '{"question": "x"}\n')),
        "no 'prompt' or 'messages' column",
    ),
    # scorers
    "reward model with two labels and none chosen": (lambda w: w.eval(proxy=str(w.rm_two_labels)), "label"),
    "scorer path missing": (lambda w: w.eval(proxy=str(w.tmp / "no_rm")), "no_rm: reward model path does not exist"),
    "scorer function missing": (lambda w: w.eval(gold=f"{w.gold}:nope"), "nope"),
    "scorer file missing": (lambda w: w.eval(gold=f"{w.tmp / 'none.py'}:score"), "none.py: scorer file not found"),
    "scorer raises": (lambda w: w.eval(gold=f"{w.gold}:boom"), "boom: the judge is down; fix the function"),
    "scorer returns the wrong length": (lambda w: w.eval(gold=f"{w.gold}:short"), "one float per response"),
    # arguments
    "--samples 0": (lambda w: w.eval("--samples", "0"), "--samples 0"),
    "--max-new-tokens past the context": (lambda w: w.eval("--max-new-tokens", "100000"), "--max-new-tokens"),
    "--top-k negative": (lambda w: w.eval("--top-k", "-1"), "--top-k"),
    "--temperature 0": (lambda w: w.eval("--temperature", "0"), "--temperature"),
    "--ensemble unknown": (lambda w: w.eval("--ensemble", "median"), "--ensemble"),
    # the database
    "database not a DuckDB file": (
        lambda w: w.eval() if w.db.write_bytes(b"not a database" * 100) else [],
        "move it aside and pass --db",
    ),
    "database path a directory": (
        lambda w: w.eval() if (w.db.unlink(), w.db.mkdir()) else [],
        "db.duckdb: cannot open the database",
    ),
    # gate policies
    "gate policy missing": (lambda w: w.gate(str(w.tmp / "none.yaml")), "--policy"),
    "gate policy not YAML": (lambda w: w.gate(w.file("p.yaml", "rules: [unclosed\n")), "YAML"),
    "gate rule on a missing metric": (
        lambda w: w.gate(w.file("m.yaml", GOOD_POLICY.replace("metric: kl", "metric: kl_typo"))), "kl_typo"),
    "gate candidate unknown": (lambda w: w.gate(w.file("g.yaml", GOOD_POLICY), "--candidate", "nope/1"), "nope"),
}  # fmt: skip


DATABASE_CASES = ("database not a DuckDB file", "database path a directory")
#: Bad input only a scorer's first call can reveal: the evaluation has started when it shows.
MID_RUN_CASES = ("scorer raises", "scorer returns the wrong length")


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"the cat sat on mat {i}"}) for i in range(4)) + "\n")
    return path


@pytest.fixture(scope="module")
def gold_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gold") / "gold.py"
    path.write_text(
        "def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n"
        "def boom(prompts, responses):\n    raise RuntimeError('boom: the judge is down')\n"
        "def short(prompts, responses):\n    return [1.0]\n"
    )
    return path


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, suite_file: Path, gold_file: Path, gpt2_ref: Path,
              gpt2_variant_a: Path, reward_model_dir: Path) -> Path:  # fmt: skip
    db = tmp_path_factory.mktemp("bad_inputs") / "good.duckdb"
    code, _, err = run_cli("eval", str(gpt2_variant_a), "--run", "r",
                           *base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file))  # fmt: skip
    assert code == 0, err
    return db


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    case: str, tmp_path: Path, evaluated: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path,
    gpt2_variant_a: Path, llama_ref: Path, reward_model_dir: Path, reward_model_two_labels_dir: Path,
    pickle_only_dir: Path,
) -> None:  # fmt: skip
    db = tmp_path / "db.duckdb"
    shutil.copy(evaluated, db)
    world = World(tmp_path, db, suite_file, gold_file, gpt2_ref, gpt2_variant_a, llama_ref, reward_model_dir,
                  reward_model_two_labels_dir, pickle_only_dir)  # fmt: skip
    build, needle = CASES[case]
    argv = build(world)
    before = db.read_bytes() if db.is_file() else None
    rows = snapshot(db) if case not in DATABASE_CASES else None
    if rows is not None:
        evaluations = rows.pop("evaluations")
    code, _, err = run_cli(*argv)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
    if rows is not None:
        after = snapshot(db)
        assert {k: v for k, v in after.items() if k != "evaluations"} == rows  # the evidence, exactly
        if case in MID_RUN_CASES:  # found while scoring: the attempt is on record, nothing else changed
            added = [row for row in after["evaluations"] if row not in evaluations]
            assert len(added) == 1 and "'failed'" in added[0], added
        else:
            assert after["evaluations"] == evaluations
    if before is not None and case in DATABASE_CASES:
        assert db.read_bytes() == before  # a file that is not a database is never overwritten

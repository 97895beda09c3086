"""Nothing is written outside the chosen database and output paths: an evaluation, its analysis,
the gate, the report and ``verify`` run with HOME, TMPDIR and the working directory pointed at empty
folders (caches included: no HF_HOME or XDG cache folder elsewhere), and afterwards the only files
that appeared or changed anywhere we can see are the database's and the named outputs; the inputs
(checkpoints, reward model, suite) are byte for byte as they were. The one exception is a
library's own cache in the user's cache folder (matplotlib's font list)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file under the folders: path -> (size, mtime in ns)."""
    found = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                stat = path.stat()
                found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def test_eval_analyze_gate_report_write_only_the_database_and_the_named_outputs(
    tmp_path: Path, gpt2_ref: Path, gpt2_variant_a: Path, reward_model_dir: Path
) -> None:
    work, home, tmp, out, suite_dir = (tmp_path / name for name in ("work", "home", "tmp", "out", "suite"))
    for folder in (work, home, tmp, out, suite_dir):
        folder.mkdir()
    suite = suite_dir / "prompts.jsonl"
    suite.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("the cat sat", "why is the sky blue")))
    (suite_dir / "gold.py").write_text(
        "def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n"
    )
    inputs = (gpt2_ref, gpt2_variant_a, reward_model_dir, suite_dir)
    watched = (work, home, tmp, *inputs)
    before = snapshot(*watched)
    hidden = ("HF_HOME", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
              "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "RLHF_EVAL_ARTIFACTS")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env.update(
        HOME=str(home), TMPDIR=str(tmp), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false"
    )
    db = out / "results.duckdb"

    def rlhf_eval(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rlhf_eval", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip

    steps = {
        "eval": rlhf_eval("eval", str(gpt2_variant_a), "--run", "r", "--ref", str(gpt2_ref), "--suite", str(suite),
                          "--proxy", str(reward_model_dir), "--gold", f"{suite_dir / 'gold.py'}:score", "--db",
                          str(db), "--samples", "2", "--max-new-tokens", "8", "--no-progress"),
        "analyze": rlhf_eval("analyze", "--db", str(db), "--replicates", "200"),
        "gate": rlhf_eval("gate", "--policy", str(ROOT / "suites" / "gates" / "default.yaml"), "--db", str(db),
                          "--candidate", "r/latest", "--junit", str(out / "gate.xml"), "--summary",
                          str(out / "gate.md")),
        "report": rlhf_eval("report", "--db", str(db), "--out", str(out / "report.html")),
        "verify": rlhf_eval("verify", "--db", str(db)),
    }  # fmt: skip
    for name, step in steps.items():
        assert step.returncode in ((0, 1) if name == "gate" else (0,)), f"{name}: {step.stderr[-2000:]}"
    after = snapshot(*watched)
    # a library's own cache in the user's cache folder is the one exception: matplotlib (the
    # report's plots) lists the system's fonts once, in ~/.cache/matplotlib, as it does for any program
    library_caches = (str(home / ".cache" / "matplotlib"),)
    changed = sorted(p for p in after if before.get(p) != after[p] and not p.startswith(library_caches))
    removed = sorted(set(before) - set(after))
    assert changed == [] and removed == [], (changed, removed)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["gate.md", "gate.xml", "report.html", "results.duckdb", "results.duckdb.lock"], written

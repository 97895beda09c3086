"""Fuzzing the file loaders: whatever a suite YAML, a prompt data file or a gate policy holds,
loading gives the typed record (``Suite``, ``GatePolicy``) or one ``UserInputError`` line that
names the file, never another exception.

Inputs: arbitrary bytes and text; soups of YAML fragments; JSON values of any shape; the shipped
``suites/default.yaml`` and ``suites/gates/default.yaml`` mutated as text and as documents; prompt
rows as JSON Lines and as a JSON array; each kind also under the wrong extension. They go
through the real entry points: ``load_suite`` (which reads the prompt data files, JSON Lines
itself, .json/.csv/.parquet through ``datasets``) and ``load_policy``.

Bounded for CI: ``EXAMPLES`` examples per test (200; a quarter for the JSON-array test, whose
every example goes through ``datasets`` at about 30 ms), derandomized so that every run tries the
same inputs, no example database. A longer campaign with new random inputs:
``RLHF_EVAL_FUZZ_EXAMPLES=20000 pytest -s tests/test_fuzz_loaders.py`` (docs/errors.md). The
examples run are counted per test and printed when the module ends (seen with ``-s``), and
written to ``$RLHF_EVAL_ARTIFACTS/fuzz-loaders.json`` when that is set.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rlhf_eval.errors import UserInputError
from rlhf_eval.gate.policy import POLICY_KEYS, RULE_KEYS, SEVERITIES, SUPPORTED_VERSIONS, GatePolicy, load_policy
from rlhf_eval.records import Prompt, Suite, content_hash
from rlhf_eval.suites import GENERATION_KEYS, SOURCE_KEYS, SUITE_KEYS, load_suite

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SUITE = REPO / "suites" / "default.yaml"
DEFAULT_DATA = REPO / "suites" / "default.jsonl"
DEFAULT_POLICY = REPO / "suites" / "gates" / "default.yaml"

CAMPAIGN = os.environ.get("RLHF_EVAL_FUZZ_EXAMPLES")
EXAMPLES = int(CAMPAIGN or 200)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=CAMPAIGN is None,  # CI tries the same inputs every run; a campaign new ones
    database=None,  # nothing written into the checkout
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)
THROUGH_DATASETS = settings(FUZZ, max_examples=max(1, EXAMPLES // 4))

# -- what a run counts ------------------------------------------------------------------------------

RUNS: Counter[tuple[str, str]] = Counter()  # (test, "loaded" or "refused") -> examples
SECONDS: defaultdict[str, float] = defaultdict(float)  # test -> seconds spent in the loader


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Iterator[None]:
    start, cpu = time.perf_counter(), time.process_time()
    yield
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    tests = sorted({test for test, _ in RUNS})
    counts = {
        test: {
            "examples": RUNS[test, "loaded"] + RUNS[test, "refused"],
            "loaded": RUNS[test, "loaded"],
            "refused": RUNS[test, "refused"],
            "seconds_in_loader": round(SECONDS[test], 2),
        }
        for test in tests
    }
    summary = {
        "examples": sum(RUNS.values()),
        "seconds": round(total, 1),
        "cpu_seconds": round(cpu, 1),
        "max_examples": EXAMPLES,
        "derandomized": CAMPAIGN is None,
        "tests": counts,
    }
    head = f"fuzz examples run: {summary['examples']} in {total:.1f} s ({cpu:.1f} s of CPU)"
    lines = [f"{head}, max_examples {EXAMPLES} per test"]
    lines += [f"  {t}: {c['examples']} ({c['loaded']} loaded, {c['refused']} refused)" for t, c in counts.items()]
    print("\n" + "\n".join(lines))
    artifacts = os.environ.get("RLHF_EVAL_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        (Path(artifacts) / "fuzz-loaders.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


# -- the property -----------------------------------------------------------------------------------


def one_error_line(exc: UserInputError, names: Path) -> None:
    """The message is one line and starts with the file at fault: ``names`` itself, or a data
    file next to it that a suite reads."""
    message = str(exc)
    assert len(message.splitlines()) == 1, message
    named = message.split(": ", 1)[0]
    assert named == str(names) or (named.startswith(str(names.parent)) and Path(named).is_file()), message


def utf8(*texts: str | None) -> None:
    """Every text of a record can be stored and printed: UTF-8 without lone surrogates."""
    for text in texts:
        if text is not None:
            text.encode("utf-8")


def check_suite(path: Path, test: str) -> None:
    start = time.perf_counter()
    try:
        suite = load_suite(path)
    except UserInputError as exc:
        RUNS[test, "refused"] += 1
        one_error_line(exc, path)
    else:
        RUNS[test, "loaded"] += 1
        assert isinstance(suite, Suite) and suite.prompts
        ids = [p.prompt_id for p in suite.prompts]
        assert len(set(ids)) == len(ids) and suite.fingerprint == content_hash(ids)
        utf8(suite.name, suite.version, suite.source)
        assert suite.name.strip() and suite.version.strip()
        for i, prompt in enumerate(suite.prompts):
            assert isinstance(prompt, Prompt) and prompt.index == i
            assert (prompt.text is None) != (prompt.messages is None)
            contents = [prompt.text] if prompt.messages is None else [dict(m)["content"] for m in prompt.messages]
            utf8(*contents, prompt.category)
            assert any(c.strip() for c in contents if c is not None)
        gen = suite.generation
        assert gen.max_new_tokens >= 1 and gen.samples_per_prompt >= 1 and gen.top_k >= 0 and gen.seed >= 0
        assert gen.temperature > 0 and 0 < gen.top_p <= 1
    finally:
        SECONDS[test] += time.perf_counter() - start


def check_policy(path: Path, test: str) -> None:
    start = time.perf_counter()
    try:
        policy = load_policy(path)
    except UserInputError as exc:
        RUNS[test, "refused"] += 1
        one_error_line(exc, path)
    else:
        RUNS[test, "loaded"] += 1
        assert isinstance(policy, GatePolicy) and policy.rules and policy.version in SUPPORTED_VERSIONS
        assert policy.replicates >= 100 and policy.seed >= 0
        names = [r.name for r in policy.rules]
        assert len(set(names)) == len(names)
        utf8(policy.name, policy.description)
        for rule in policy.rules:
            assert rule.kind in ("absolute", "relative", "boolean", "paired") and rule.severity in SEVERITIES
            utf8(rule.name, rule.metric, rule.description, rule.rule_text)  # the report prints these
    finally:
        SECONDS[test] += time.perf_counter() - start


# -- inputs -----------------------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = [
    {"id": "a", "prompt": "Explain recursion.", "category": "explanation"},
    {"id": "b", "prompt": "List three fruits.", "category": "list"},
    {"id": "c", "prompt": "What is 2 + 2?", "category": "factual"},
]
CHATS: list[dict[str, Any]] = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]},
    {"messages": [{"role": "user", "content": "Name a prime."}]},
]
SMALL_SUITE = {
    "name": "small",
    "version": "1",
    "source": {"path": "p.jsonl", "field": "prompt", "id_field": "id", "category_field": "category"},
    "generation": {"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.9},
    "limit": 2,
}
SUITE_TEXT = DEFAULT_SUITE.read_text(encoding="utf-8")
POLICY_TEXT = DEFAULT_POLICY.read_text(encoding="utf-8")
SUITE_DOC = yaml.safe_load(SUITE_TEXT)
POLICY_DOC = yaml.safe_load(POLICY_TEXT)
CHAT_SUITE_TEXT = 'name: chats\nversion: "2"\nsource: {path: chat.jsonl, messages_field: messages}\n'
DATASET_SUITE_TEXT = 'name: saved\nversion: "3"\nsource:\n  dataset: saved\n  split: train\n  field: prompt\n'
JSONL_TEXT = "".join(json.dumps(r) + "\n" for r in ROWS + CHATS)

BIG = 2**1100  # beyond any float
HUGE_HEX = "0x" + "f" * 3600  # YAML reads it; Python cannot print it (over 4300 digits)
LONG_NAME = "a" * 300 + ".jsonl"  # longer than a file name may be
WORDS = [
    # what suites name: data files, folders, hub ids, columns
    "p.jsonl", "default.jsonl", "chat.jsonl", "p.json", "p.csv", "saved", "./saved", "missing.jsonl", "org/name",
    "~nosuchuser/p.jsonl", LONG_NAME, "prompt", "messages", "id", "category", "train", "test",
    # what policies hold: thresholds, tests, statistics, severities, metrics
    "baseline", "reference + 20%", "baseline - 1", "reference * 2", "baseline * 20%", "paired", "value", "ci_low",
    "ci_high", "critical", "warning", "not_lower", "not_higher", "kl", "gold_reward", "past_peak",
    # suspects: a lone surrogate, line breaks, NUL, blanks, numbers as text, a bad date
    "\ud800", "a\nb", "a\u2028b", "\x00", "", " ", "1.0", "nan", "-inf", "1e400", "2024-13-40",
]  # fmt: skip
KEYS = st.sampled_from(sorted({*SUITE_KEYS, *SOURCE_KEYS, *GENERATION_KEYS, *POLICY_KEYS, *RULE_KEYS, "replicates"}))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.sampled_from([0, 1, -1, 100, 2000, 0.05, 0.5, 1e308, BIG, -BIG]),
    st.text(st.characters(exclude_categories=[]), max_size=12),  # lone surrogates included
    st.sampled_from(WORDS),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(KEYS, st.text(max_size=6)), inner, max_size=5)
    ),
    max_leaves=12,
)
# Values that broke a loader once: half of the edits of a document use one of them.
SUSPECTS = st.sampled_from(  # immutable: an edit may add to a drawn list or mapping
    [BIG, -BIG, 10**400, float("nan"), float("inf"), None, "\ud800", "a\nb", "2001-13-45", "~nosuchuser/p", LONG_NAME]
)
FRAGMENTS = [
    "name: s\n", 'version: "1"\n', "version: 1\n", "source:\n", "  path: p.jsonl\n", "  dataset: saved\n",
    "  field: prompt\n", "  messages_field: messages\n", "rules:\n", "  - name: r\n", "    metric: kl\n",
    "    max: ", "    test: paired\n", "    equals: ", "generation:\n", "  top_p: ", "limit: ", "bootstrap: ",
    "-1", "0", "1.5", ".nan", ".inf", "1e999", "99999999999999999999999", str(BIG), HUGE_HEX, "9" * 5000,
    "null", "true", "[", "]", "{", "}", ": ", "- ", "? ", "\n", "  ", "\t", "'", '"', "#", "|\n", ">-\n", "&a ", "*a",
    "<<: *a\n", "---\n", "...\n", "%YAML 1.1\n", "!!python/object:os.system ", "!!binary x", "!!int abc",
    "!!float x", "!!set {a}", "!!omap [a: 1]", "2024-13-40", "2001-02-29 25:61:00", '"\\ud800"', '"\\x00"',
    "~nosuchuser/x.jsonl", LONG_NAME, "[" * 500, "{a: " * 500, "\x00", "\x85", "\u2028", "\ufeff", "é", "日本",
]  # fmt: skip
EXTENSIONS = [".yaml", ".yml", ".YAML", ".jsonl", ".json", ".csv", ".parquet", ".txt", ""]


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8


soup = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=30).map("".join)


@st.composite
def mutated_text(draw: st.DrawFn, bases: list[str]) -> str:
    """One of ``bases`` with one to four slices replaced: by a fragment, a few characters,
    nothing, or the slice doubled."""
    text = draw(st.sampled_from(bases))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        piece = draw(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6), st.just(""), st.just(text[i:j] * 2)))
        text = text[:i] + piece + text[j:]
    return text


def spots(value: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key or index) of every value inside ``value``."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in list(items):
        yield value, key
        yield from spots(item)


@st.composite
def mutated_document(draw: st.DrawFn, bases: list[Any]) -> Any:
    """One of ``bases`` (parsed YAML) with one to three edits: a value replaced by any JSON value,
    a key or item removed, or one added."""
    holder = [copy.deepcopy(draw(st.sampled_from(bases)))]  # so that the whole document can be replaced
    for _ in range(draw(st.integers(1, 3))):
        container, key = draw(st.sampled_from(list(spots(holder))))
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            container[key] = draw(st.one_of(SUSPECTS, JSON_VALUES))
        elif action == "remove" and container is not holder:
            del container[key]
        elif isinstance(container[key], dict):
            container[key][draw(KEYS)] = draw(st.one_of(SUSPECTS, JSON_VALUES))
        elif isinstance(container[key], list):
            container[key].insert(draw(st.integers(0, len(container[key]))), draw(st.one_of(SUSPECTS, JSON_VALUES)))
    return holder[0]


@st.composite
def rendered(draw: st.DrawFn, document: st.SearchStrategy[Any]) -> bytes:
    """A document as YAML (block or flow style) or as JSON (escaped, or raw with lone surrogates)."""
    value = draw(document)
    form = draw(st.sampled_from(["yaml", "flow", "json", "raw-json"]))
    if form in ("yaml", "flow"):
        return encode(yaml.safe_dump(value, allow_unicode=True, default_flow_style=form == "flow", sort_keys=False))
    return encode(json.dumps(value, ensure_ascii=form == "json"))


@st.composite
def json_lines(draw: st.DrawFn) -> list[Any]:
    """Rows for a prompt file: any JSON values, or the good rows edited."""
    rows = draw(
        st.one_of(
            st.lists(JSON_VALUES, min_size=1, max_size=5),
            mutated_document([ROWS, CHATS, ROWS + CHATS, [{"prompt": CHATS[0]["messages"]}, {"prompt": "Text."}]]),
        )
    )
    return rows if isinstance(rows, list) else [rows]  # an edit may replace the whole list


CONTENT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(encode),
    soup.map(encode),
    mutated_text([SUITE_TEXT, POLICY_TEXT, CHAT_SUITE_TEXT, DATASET_SUITE_TEXT, JSONL_TEXT]).map(encode),
    rendered(JSON_VALUES),
    rendered(st.sampled_from([SMALL_SUITE, POLICY_DOC, ROWS])),  # well-formed, maybe under the wrong extension
)

# -- the files the suites name ----------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the data files the fuzzed suites name: the shipped prompts, small JSON Lines,
    JSON, CSV files and a saved dataset."""
    import datasets

    folder = tmp_path_factory.mktemp("fuzz-loaders")
    shutil.copy(DEFAULT_DATA, folder / "default.jsonl")
    (folder / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    (folder / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CHATS), encoding="utf-8")
    (folder / "p.json").write_text(json.dumps(ROWS), encoding="utf-8")
    (folder / "p.csv").write_text("id,prompt\na,Say hi.\nb,Say bye.\n", encoding="utf-8")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder / "saved"))
    return folder


@contextmanager
def staged(folder: Path, name: str, content: bytes) -> Iterator[Path]:
    """``content`` written to ``folder/name`` for the length of the block, then removed: a fuzzed
    suite may name any file, and no later example may find this one."""
    path = folder / name
    path.write_bytes(content)
    try:
        yield path
    finally:
        path.unlink()


# -- suites -----------------------------------------------------------------------------------------


@FUZZ
@given(content=CONTENT, extension=st.sampled_from(EXTENSIONS))
@example(content=encode(CHAT_SUITE_TEXT), extension=".jsonl")
@example(content=JSONL_TEXT.encode(), extension=".yaml")
@example(content=POLICY_TEXT.encode(), extension=".yml")
@example(content=b"[" * 100_000 + b"\n", extension=".jsonl")  # raised RecursionError (fixed in suite_data.py)
@example(content=b'null\n{"prompt": "Hi."}\n', extension=".json")  # a segmentation fault (fixed in suite_data.py)
@example(content=b"nullnull", extension=".json")  # the same; found by the long campaign
def test_any_content_under_any_extension_as_a_suite(workspace: Path, content: bytes, extension: str) -> None:
    with staged(workspace, f"input{extension}", content) as path:
        check_suite(path, "suite: any content, any extension")


@FUZZ
@given(text=st.one_of(soup, mutated_text([SUITE_TEXT, CHAT_SUITE_TEXT, DATASET_SUITE_TEXT])))
# Found with this fuzzing and fixed (suites.py): these raised OSError, RuntimeError, ValueError,
# or (the surrogate) loaded a Suite whose name cannot be stored or printed.
@example(text=f'name: s\nversion: "1"\nsource: {{path: {LONG_NAME}}}\n')
@example(text='name: s\nversion: "1"\nsource: {dataset: "~nosuchuser/x"}\n')
@example(text=f"name: s\nversion: {HUGE_HEX}\nsource: {{path: p.jsonl}}\n")
@example(text='name: "\\ud800"\nversion: "1"\nsource: {path: p.jsonl}\n')
def test_mutated_suite_yaml(workspace: Path, text: str) -> None:
    with staged(workspace, "input.yaml", encode(text)) as path:
        check_suite(path, "suite: mutated YAML text")


@FUZZ
@given(content=rendered(mutated_document([SUITE_DOC, SMALL_SUITE, yaml.safe_load(DATASET_SUITE_TEXT)])))
def test_mutated_suite_documents(workspace: Path, content: bytes) -> None:
    with staged(workspace, "input.yaml", content) as path:
        check_suite(path, "suite: mutated documents")


def jsonl(rows: list[Any], ascii_only: bool, separator: str) -> bytes:
    return encode(separator.join(json.dumps(r, ensure_ascii=ascii_only) for r in rows) + separator)


@FUZZ
@given(rows=json_lines(), ascii_only=st.booleans(), separator=st.sampled_from(["\n", "\r\n", "\n\n"]))
# Found with this fuzzing and fixed (suite_data.py): a lone surrogate raised UnicodeEncodeError.
@example(rows=[{"prompt": "\ud800"}], ascii_only=True, separator="\n")
@example(rows=[{"messages": [{"role": "user", "content": "\udfff"}]}], ascii_only=True, separator="\n")
@example(rows=[{"prompt": "Hi.", "category": "\ud800"}], ascii_only=True, separator="\n")
def test_prompt_rows_as_json_lines(workspace: Path, rows: list[Any], ascii_only: bool, separator: str) -> None:
    with staged(workspace, "input.jsonl", jsonl(rows, ascii_only, separator)) as path:
        check_suite(path, "prompt data: JSON Lines")


@THROUGH_DATASETS
@given(rows=json_lines(), ascii_only=st.booleans())
# Found with this fuzzing and fixed (suite_data.py): a null first row crashed the process in
# pyarrow's JSON reader (a segmentation fault, so no traceback at all).
@example(rows=[None, {"prompt": "Hi."}], ascii_only=True)
@example(rows=[float("nan"), {"prompt": [float("nan")]}, {"prompt": "Text."}], ascii_only=True)  # long campaign
def test_prompt_rows_as_a_json_array(workspace: Path, rows: list[Any], ascii_only: bool) -> None:
    with staged(workspace, "input.json", encode(json.dumps(rows, ensure_ascii=ascii_only))) as path:
        check_suite(path, "prompt data: JSON array")


# -- gate policies ----------------------------------------------------------------------------------


@FUZZ
@given(content=CONTENT, extension=st.sampled_from([".yaml", ".yml", ".json", ".jsonl", ".txt", ""]))
def test_any_content_under_any_extension_as_a_policy(workspace: Path, content: bytes, extension: str) -> None:
    with staged(workspace, f"input{extension}", content) as path:
        check_policy(path, "policy: any content, any extension")


POLICY_HEAD = "version: 1\nrules:\n  - {name: r, metric: kl, "


@FUZZ
@given(text=st.one_of(soup, mutated_text([POLICY_TEXT, POLICY_HEAD + "max: reference + 20%}\n"])))
# Found with this fuzzing and fixed (gate/policy.py): these raised OverflowError, ValueError or
# RecursionError; two rules named "a\nb" gave a message of two lines; the lone surrogate loaded
# a rule name that cannot be printed.
@example(text=POLICY_HEAD + f"max: {'9' * 400}}}\n")
@example(text=POLICY_HEAD + f"test: paired, margin: {BIG}}}\n")
@example(text=f"version: {HUGE_HEX}\n")
@example(text="version: 1\nname: 2001-13-45\n")
@example(text="version: !!int abc\n")
@example(text="[" * 500)
@example(text='version: 1\nrules:\n  - {name: "a\\nb", metric: kl, max: 1}\n  - {name: "a\\nb", metric: kl, max: 1}\n')
@example(text='version: 1\nrules: [{name: "\\ud800", metric: kl, max: 1}]\n')
def test_mutated_policy_yaml(workspace: Path, text: str) -> None:
    with staged(workspace, "input.yaml", encode(text)) as path:
        check_policy(path, "policy: mutated YAML text")


@FUZZ
@given(content=rendered(mutated_document([POLICY_DOC])))
def test_mutated_policy_documents(workspace: Path, content: bytes) -> None:
    with staged(workspace, "input.yaml", content) as path:
        check_policy(path, "policy: mutated documents")

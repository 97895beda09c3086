"""Prompt suites: loading every source kind, identity, limits, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf_eval.errors import UserInputError
from rlhf_eval.records import GenerationDefaults, content_hash
from rlhf_eval.suites import load_suite, validate_suite

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SUITE = REPO / "suites" / "default.yaml"
CATEGORIES = {"explanation", "advice", "list", "factual", "benign_refusal_bait", "opinion", "creative"}

ROWS: list[dict[str, Any]] = [
    {"id": "a", "prompt": "Explain recursion.", "category": "explanation"},
    {"id": "b", "prompt": "List three fruits.", "category": "list"},
    {"id": "c", "prompt": "What is 2 + 2?", "category": "factual"},
    {"id": "d", "prompt": "Write a haiku about tea.", "category": "creative"},
    {"id": "e", "prompt": "Is tea better than coffee?", "category": "opinion"},
]
TEXTS = [r["prompt"] for r in ROWS]
CHATS = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]},
    {"messages": [{"role": "user", "content": "Name a prime."}]},
]
SUITE_YAML = """\
name: tiny
version: "2.1"
source:
  path: {path}
  id_field: id
  category_field: category
generation:
  max_new_tokens: 16
  samples_per_prompt: 2
"""


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_suite(folder: Path, body: str, rows: list[dict[str, Any]] | None = None, data: str = "p.jsonl") -> Path:
    """A suite YAML in ``folder`` (and its JSONL data, when ``rows`` are given)."""
    if rows is not None:
        write_jsonl(folder / data, rows)
    path = folder / "s.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def minimal(extra: str = "", source: str = "  path: p.jsonl\n") -> str:
    return f'name: s\nversion: "1"\nsource:\n{source}{extra}'


def expect_error(path: Path | str, *parts: str, limit: int | None = None) -> str:
    """Loading fails with a one-line UserInputError that contains every part."""
    with pytest.raises(UserInputError) as info:
        load_suite(path, limit=limit)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# -- loading -------------------------------------------------------------------------------------


def test_yaml_with_jsonl(tmp_path: Path) -> None:
    path = write_suite(tmp_path, SUITE_YAML.format(path="p.jsonl"), ROWS)
    suite = load_suite(path)
    assert (suite.name, suite.version) == ("tiny", "2.1")
    assert [p.text for p in suite.prompts] == TEXTS
    assert [p.index for p in suite.prompts] == [0, 1, 2, 3, 4]
    assert [p.category for p in suite.prompts] == [r["category"] for r in ROWS]
    assert [p.prompt_id for p in suite.prompts] == [content_hash(t) for t in TEXTS]
    assert all(p.messages is None for p in suite.prompts)
    assert suite.fingerprint == content_hash([content_hash(t) for t in TEXTS])
    assert suite.source == str((tmp_path / "p.jsonl").resolve())
    assert suite.generation == GenerationDefaults(max_new_tokens=16, samples_per_prompt=2)


def test_yaml_with_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "p.parquet")
    suite = load_suite(write_suite(tmp_path, SUITE_YAML.format(path="p.parquet")))
    assert [p.text for p in suite.prompts] == TEXTS
    assert suite.fingerprint == load_suite(write_jsonl(tmp_path / "same.jsonl", ROWS)).fingerprint


def test_yaml_with_csv_keeps_commas_quotes_and_words_like_none(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(
        'id,prompt,category\n1,"Hello, world",x\n2,"Say ""hi"".",y\n3,None,\n4,NA,z\n', encoding="utf-8"
    )
    suite = load_suite(write_suite(tmp_path, SUITE_YAML.format(path="p.csv")))
    assert [p.text for p in suite.prompts] == ["Hello, world", 'Say "hi".', "None", "NA"]
    assert [p.category for p in suite.prompts] == ["x", "y", None, "z"]


def test_chat_messages(tmp_path: Path) -> None:
    path = write_suite(tmp_path, minimal("  messages_field: messages\n"), CHATS)
    suite = load_suite(path)
    first = suite.prompts[0]
    assert first.text is None
    assert first.messages == (
        (("role", "system"), ("content", "Be brief.")),
        (("role", "user"), ("content", "Name a colour.")),
    )
    assert first.messages_list == CHATS[0]["messages"]
    assert first.display_text == "Name a colour."
    assert [p.prompt_id for p in suite.prompts] == [content_hash(c["messages"]) for c in CHATS]


def test_conversational_prompt_column_is_read_as_chat(tmp_path: Path) -> None:
    # TRL's conversational format puts the messages in the "prompt" column.
    path = write_jsonl(tmp_path / "conv.jsonl", [{"prompt": CHATS[1]["messages"]}, {"prompt": "Plain text."}])
    suite = load_suite(path)
    assert suite.prompts[0].messages_list == CHATS[1]["messages"]
    assert suite.prompts[1].text == "Plain text."


def test_bare_data_file(tmp_path: Path) -> None:
    suite = load_suite(write_jsonl(tmp_path / "my_prompts.jsonl", ROWS))
    assert (suite.name, suite.version) == ("my_prompts", "0")
    assert [p.text for p in suite.prompts] == TEXTS
    assert [p.category for p in suite.prompts] == [r["category"] for r in ROWS]  # "category" column found
    assert suite.generation == GenerationDefaults()
    chats = load_suite(write_jsonl(tmp_path / "chats.jsonl", CHATS))
    assert [p.messages_list for p in chats.prompts] == [c["messages"] for c in CHATS]


def test_bare_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([{"prompt": t} for t in TEXTS]), encoding="utf-8")
    assert [p.text for p in load_suite(path).prompts] == TEXTS


def test_local_dataset_folder(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    suite = load_suite(write_suite(tmp_path, minimal("  id_field: id\n", source="  dataset: saved\n")))
    assert [p.text for p in suite.prompts] == TEXTS
    assert suite.source == str((tmp_path / "saved").resolve())
    assert suite.fingerprint == load_suite(write_jsonl(tmp_path / "same.jsonl", ROWS)).fingerprint


def test_local_dataset_dict_folder_picks_the_split(tmp_path: Path) -> None:
    import datasets

    splits = {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:2])}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))
    assert len(load_suite(write_suite(tmp_path, minimal(source="  dataset: dd\n"))).prompts) == 5
    test = load_suite(write_suite(tmp_path, minimal(source="  dataset: dd\n  split: test\n")))
    assert [p.text for p in test.prompts] == TEXTS[:2]
    expect_error(
        write_suite(tmp_path, minimal(source="  dataset: dd\n  split: tset\n")),
        "no split 'tset'",
        "Did you mean 'test'?",
        "Splits: train, test",
    )


def test_local_folder_of_data_files(tmp_path: Path) -> None:
    # A folder laid out like a hub dataset (one file per split), read by datasets.load_dataset.
    (tmp_path / "hublike").mkdir()
    write_jsonl(tmp_path / "hublike" / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "hublike" / "test.jsonl", ROWS[:1])
    train = load_suite(write_suite(tmp_path, minimal(source="  dataset: hublike\n")))
    assert [p.text for p in train.prompts] == TEXTS
    test = load_suite(write_suite(tmp_path, minimal(source="  dataset: hublike\n  split: test\n")))
    assert [p.text for p in test.prompts] == TEXTS[:1]
    expect_error(
        write_suite(tmp_path, minimal(source="  dataset: hublike\n  split: dev\n")),
        "s.yaml: dataset 'hublike' (split 'dev'): cannot load it",
        "dev",
        "Check source.dataset, source.config and split.",
    )


def test_fingerprint_depends_on_prompt_content_and_order_only(tmp_path: Path) -> None:
    base = load_suite(write_jsonl(tmp_path / "a.jsonl", ROWS)).fingerprint
    # Same prompts with other ids and categories, in another file: same fingerprint.
    relabeled = [{"prompt": r["prompt"], "id": r["id"] + "x", "category": "other"} for r in ROWS]
    assert load_suite(write_jsonl(tmp_path / "b.jsonl", relabeled)).fingerprint == base
    changed = [dict(r) for r in ROWS]
    changed[2]["prompt"] = "What is 2 + 3?"
    assert load_suite(write_jsonl(tmp_path / "c.jsonl", changed)).fingerprint != base
    assert load_suite(write_jsonl(tmp_path / "d.jsonl", ROWS[::-1])).fingerprint != base


def test_same_prompt_has_the_same_id_in_two_suites(tmp_path: Path) -> None:
    one = load_suite(write_jsonl(tmp_path / "one.jsonl", ROWS[:3]))
    two = load_suite(write_jsonl(tmp_path / "two.jsonl", ROWS[2:]))
    assert one.prompts[2].prompt_id == two.prompts[0].prompt_id


def test_limit_is_the_smaller_of_yaml_and_argument(tmp_path: Path) -> None:
    path = write_suite(tmp_path, minimal("limit: 3\n"), ROWS)
    assert [p.text for p in load_suite(path).prompts] == TEXTS[:3]
    assert [p.text for p in load_suite(path, limit=2).prompts] == TEXTS[:2]
    assert len(load_suite(path, limit=50).prompts) == 3
    short = load_suite(path, limit=2)
    assert short.fingerprint == content_hash([content_hash(t) for t in TEXTS[:2]])
    bare = write_jsonl(tmp_path / "bare.jsonl", ROWS)
    assert len(load_suite(bare, limit=4).prompts) == 4
    # Rows past the limit are not read as prompts, so a blank one there does no harm.
    assert len(load_suite(write_jsonl(tmp_path / "tail.jsonl", [*ROWS, {"prompt": ""}]), limit=5).prompts) == 5


def test_numeric_version_becomes_a_string_with_a_warning(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "name: s\nversion: 1.5\nsource:\n  path: p.jsonl\n", ROWS)
    assert load_suite(path).version == "1.5"
    assert any("quote it" in w for w in validate_suite(path).warnings)


def test_validate_report(tmp_path: Path) -> None:
    body = minimal("  category_field: category\ngeneration:\n  temperature: 0.7\n")
    rows = [*ROWS, {"prompt": " padded "}]
    report = validate_suite(write_suite(tmp_path, body, rows))
    assert (report.name, report.version, report.n_prompts, report.n_text, report.n_chat) == (
        "s",
        "1",
        6,
        6,
        0,
    )
    assert report.categories == {"creative": 1, "explanation": 1, "factual": 1, "list": 1, "opinion": 1}
    assert report.fingerprint == load_suite(tmp_path / "s.yaml").fingerprint
    text = " | ".join(report.warnings)
    for part in ("temperature 0.7", "only 6 prompts", "1 prompts have no category", "whitespace (row 6)"):
        assert part in text
    chats = validate_suite(
        write_jsonl(tmp_path / "c.jsonl", [*CHATS, {"messages": [{"role": "assistant", "content": "Hi"}]}])
    )
    assert (chats.n_chat, chats.n_text) == (3, 0)
    assert any("do not end with a user message (row 3)" in w for w in chats.warnings)


def test_shipped_default_suite() -> None:
    report = validate_suite(str(DEFAULT_SUITE))
    assert report.name == "default"
    assert report.n_prompts >= 120
    assert set(report.categories) == CATEGORIES
    assert min(report.categories.values()) >= 15  # balanced
    suite = load_suite(DEFAULT_SUITE)
    assert suite.generation == GenerationDefaults(
        max_new_tokens=64, samples_per_prompt=1, temperature=1.0, top_p=1.0, top_k=0, seed=0
    )
    assert len({p.prompt_id for p in suite.prompts}) == len(suite.prompts)
    assert all(p.text is not None and len(p.text.split()) < 30 for p in suite.prompts)
    rows = [json.loads(line) for line in (REPO / "suites" / "default.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(set(r) == {"id", "prompt", "category"} for r in rows)
    # Any prefix stays balanced: the first 7 * k prompts hold k of each category.
    assert {p.category for p in load_suite(DEFAULT_SUITE, limit=7).prompts} == CATEGORIES


# -- errors in the suite file ----------------------------------------------------------------------


def test_missing_file_suggests_a_sibling(tmp_path: Path) -> None:
    write_suite(tmp_path, minimal(), ROWS)
    expect_error(tmp_path / "other.yaml", "other.yaml: no such file. Check the path.")
    expect_error(tmp_path / "ss.yaml", "ss.yaml: no such file. Did you mean 's.yaml'?")
    expect_error(tmp_path / "defualt.yaml", "defualt.yaml: no such file. Check the path.")


def test_unknown_extension_and_folder(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("hello\n")
    expect_error(tmp_path / "p.txt", "p.txt: unknown extension '.txt'", ".jsonl, .json, .parquet, .csv")
    expect_error(tmp_path, "is a folder", "source.dataset")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write_suite(tmp_path, 'name: s\nversion: "1"\nsource: [path: p.jsonl\n')
    message = expect_error(path, "s.yaml: invalid YAML at line 4", "Fix the syntax")
    assert "line 4, column 1" in message
    path = write_suite(tmp_path, "name: s\n  version: 1\n")
    expect_error(path, "s.yaml: invalid YAML at line 2")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    expect_error(write_suite(tmp_path, minimal("name: t\n"), ROWS), "s.yaml", "key 'name' appears twice", "line 5")


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        ("", ["s.yaml: the top level must be a mapping", "the file is empty", "docs/suites.md"]),
        ("- name: s\n", ["s.yaml: the top level must be a mapping", "the file is a list"]),
        ("just text\n", ["the file is a str"]),
    ],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, body: str, parts: list[str]) -> None:
    expect_error(write_suite(tmp_path, body), *parts)


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        (
            minimal("nmae: x\n"),
            ["s.yaml: unknown key 'nmae' at the top level.", "Did you mean 'name'?", "Allowed: name,"],
        ),
        (
            minimal("  feild: prompt\n"),
            ["s.yaml: unknown key 'feild' in source.", "Did you mean 'field'?", "Allowed: path, dataset,"],
        ),
        (
            minimal("generation:\n  max_new_token: 8\n"),
            [
                "s.yaml: unknown key 'max_new_token' in generation. Did you mean 'max_new_tokens'? "
                "Allowed: max_new_tokens, samples_per_prompt, temperature, top_p, top_k, seed."
            ],
        ),
        (minimal("zzz: 1\n"), ["unknown key 'zzz' at the top level. Allowed:"]),
    ],
)
def test_unknown_keys(tmp_path: Path, body: str, parts: list[str]) -> None:
    expect_error(write_suite(tmp_path, body, ROWS), *parts)


@pytest.mark.parametrize(
    ("body", "key", "fix"),
    [
        ('version: "1"\nsource:\n  path: p.jsonl\n', "name", "name: my-suite"),
        ("name: s\nsource:\n  path: p.jsonl\n", "version", 'version: "1.0"'),
        ('name: s\nversion: "1"\n', "source", "source: {path: prompts.jsonl}"),
        ('name: s\nversion: "1"\nsource:\n', "source", "source: {path: prompts.jsonl}"),
    ],
)
def test_missing_required_keys(tmp_path: Path, body: str, key: str, fix: str) -> None:
    expect_error(write_suite(tmp_path, body, ROWS), f"s.yaml: missing required key '{key}'", fix)


@pytest.mark.parametrize(
    ("extra", "parts"),
    [
        (
            "generation:\n  max_new_tokens: 0\n",
            ["generation.max_new_tokens must be an integer >= 1, got 0 (int)"],
        ),
        (
            "generation:\n  max_new_tokens: 8.5\n",
            ["generation.max_new_tokens must be an integer >= 1, got 8.5"],
        ),
        (
            "generation:\n  max_new_tokens: many\n",
            ["generation.max_new_tokens must be an integer", "'many' (str)"],
        ),
        ("generation:\n  samples_per_prompt: 0\n", ["generation.samples_per_prompt must be an integer >= 1"]),
        ("generation:\n  temperature: 0\n", ["generation.temperature must be a number > 0, got 0"]),
        ("generation:\n  temperature: .inf\n", ["generation.temperature must be a number > 0, got inf"]),
        (
            "generation:\n  temperature: true\n",
            ["generation.temperature must be a number > 0, got True (bool)"],
        ),
        ("generation:\n  top_p: 0\n", ["generation.top_p must be a number > 0 and <= 1, got 0"]),
        ("generation:\n  top_p: 1.5\n", ["generation.top_p must be a number > 0 and <= 1, got 1.5"]),
        ("generation:\n  top_k: -1\n", ["generation.top_k must be an integer >= 0, got -1"]),
        ("generation:\n  seed: -3\n", ["generation.seed must be an integer >= 0, got -3"]),
        ("generation: 64\n", ["generation must be a mapping, got 64 (int)", "Write e.g."]),
        ("limit: 0\n", ["limit must be an integer >= 1, got 0", "Fix it or remove the key"]),
        ("limit: ten\n", ["limit must be an integer >= 1, got 'ten' (str)", "Fix it"]),
        ("description: [a]\n", ["description must be a string, got ['a'] (list)", "Quote it"]),
    ],
)
def test_wrong_types_and_ranges(tmp_path: Path, extra: str, parts: list[str]) -> None:
    message = expect_error(write_suite(tmp_path, minimal(extra), ROWS), "s.yaml: ", *parts)
    assert "Fix" in message or "Write" in message or "Quote" in message


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        ('name: [s]\nversion: "1"\nsource: {path: p.jsonl}\n', ["s.yaml: name must be a non-empty string"]),
        ('name: "  "\nversion: "1"\nsource: {path: p.jsonl}\n', ["name must be a non-empty string"]),
        ("name: s\nversion: [1]\nsource: {path: p.jsonl}\n", ["version must be a string", 'version: "1.0"']),
        (
            'name: s\nversion: "1"\nsource: p.jsonl\n',
            ["source must be a mapping", "source: {path: prompts.jsonl}"],
        ),
        (minimal("  field: 3\n"), ["source.field must be a non-empty string, got 3 (int)"]),
    ],
)
def test_wrong_types_of_name_version_source(tmp_path: Path, body: str, parts: list[str]) -> None:
    expect_error(write_suite(tmp_path, body, ROWS), *parts)


def test_limit_argument_must_be_positive(tmp_path: Path) -> None:
    expect_error(write_jsonl(tmp_path / "p.jsonl", ROWS), "--limit 0: must be an integer >= 1", limit=0)


def test_path_and_dataset_exactly_one(tmp_path: Path) -> None:
    both = write_suite(tmp_path, minimal(source="  path: p.jsonl\n  dataset: org/name\n"), ROWS)
    expect_error(both, "s.yaml: source has both 'path' and 'dataset'", "Give exactly one")
    neither = write_suite(tmp_path, minimal(source="  field: prompt\n"), ROWS)
    expect_error(neither, "s.yaml: source has neither 'path' nor 'dataset'", "Give exactly one")


def test_field_and_messages_field_exclusive(tmp_path: Path) -> None:
    body = minimal("  field: prompt\n  messages_field: messages\n")
    expect_error(write_suite(tmp_path, body, ROWS), "s.yaml: source has both 'field' and 'messages_field'", "Keep one")


def test_split_or_config_with_a_path(tmp_path: Path) -> None:
    body = minimal("  split: test\n")
    expect_error(write_suite(tmp_path, body, ROWS), "s.yaml: source.split applies only to source.dataset", "Remove it")


# -- errors in the data ------------------------------------------------------------------------------


def test_data_file_missing_or_unknown_extension(tmp_path: Path) -> None:
    missing = write_suite(tmp_path, minimal(source="  path: data/nope.jsonl\n"))
    expect_error(
        missing,
        "s.yaml: source.path 'data/nope.jsonl' does not exist",
        "relative to the suite's folder",
        "Fix the path",
    )
    (tmp_path / "p.txt").write_text("x\n")
    expect_error(write_suite(tmp_path, minimal(source="  path: p.txt\n")), "unknown extension '.txt'", ".parquet")


def test_field_missing_lists_the_columns(tmp_path: Path) -> None:
    rows = [{"text": r["prompt"], "id": r["id"]} for r in ROWS]
    message = expect_error(
        write_suite(tmp_path, minimal(), rows),
        "p.jsonl: no column 'prompt' for source.field",
        "Columns: text, id",
        "Set source.field to one of them",
    )
    assert "s.yaml" not in message.split(":")[0]  # the data file is named first
    expect_error(write_suite(tmp_path, minimal("  field: txt\n"), rows), "no column 'txt'", "Did you mean 'text'?")
    expect_error(write_suite(tmp_path, minimal("  id_field: ident\n"), ROWS), "no column 'ident' for source.id_field")
    expect_error(
        write_jsonl(tmp_path / "bare.jsonl", rows),
        "bare.jsonl: no 'prompt' or 'messages' column",
        "columns: text, id",
    )


@pytest.mark.parametrize("blank", ["", "   ", "\n\t", None])
def test_empty_prompt_names_the_row(tmp_path: Path, blank: str | None) -> None:
    rows = [dict(r) for r in ROWS]
    rows[3]["prompt"] = blank
    body = minimal("  id_field: id\n")
    expect_error(write_suite(tmp_path, body, rows), "p.jsonl: row 4 (id 'd'): empty prompt", "remove the row")


def test_non_text_prompt(tmp_path: Path) -> None:
    expect_error(write_jsonl(tmp_path / "n.jsonl", [{"prompt": "a"}, {"prompt": 7}]), "row 2", "7 (int), not text")


@pytest.mark.parametrize(
    ("messages", "parts"),
    [
        ("Hello", ["row 1: messages in column 'messages' are 'Hello' (str), not a list", "{role, content}"]),
        ([], ["row 1: messages in column 'messages' are empty"]),
        (["Hello"], ["row 1: message 1 is 'Hello' (str), not a mapping"]),
        (
            [{"role": "usr", "content": "Hi"}],
            ["message 1 has unknown role 'usr'. Did you mean 'user'?", "Allowed:"],
        ),
        ([{"role": "user"}], ["message 1 needs a string role and content", "content null"]),
        ([{"role": "user", "content": "Hi", "name": "bob"}], ["message 1 has key 'name'"]),
        ([{"role": "user", "content": "  "}], ["row 1: empty prompt (every message is blank)"]),
    ],
)
def test_malformed_messages(tmp_path: Path, messages: Any, parts: list[str]) -> None:
    path = write_suite(tmp_path, minimal("  messages_field: messages\n"), [{"messages": messages}])
    expect_error(path, "p.jsonl: ", *parts)


def test_duplicate_ids(tmp_path: Path) -> None:
    rows = [dict(r) for r in ROWS]
    rows[4]["id"] = "b"
    message = expect_error(
        write_suite(tmp_path, minimal("  id_field: id\n"), rows),
        "p.jsonl: duplicate ids in column 'id': 'b' in rows 2 and 5",
        "Remove the duplicates",
    )
    assert message.startswith(str(tmp_path / "p.jsonl"))
    missing = [dict(r) for r in ROWS]
    del missing[1]["id"]
    expect_error(write_suite(tmp_path, minimal("  id_field: id\n"), missing), "row 2 has no id in column 'id'")


def test_duplicate_prompts(tmp_path: Path) -> None:
    rows = [*ROWS, {"id": "f", "prompt": ROWS[1]["prompt"]}, {"id": "g", "prompt": ROWS[1]["prompt"]}]
    expect_error(
        write_suite(tmp_path, minimal(), rows),
        "p.jsonl: duplicate prompts: rows 2, 6 and 7",
        "Remove the duplicate rows",
    )
    chats = [*CHATS, CHATS[0]]
    expect_error(write_jsonl(tmp_path / "c.jsonl", chats), "c.jsonl: duplicate prompts: rows 1 and 3")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_data_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "p.jsonl").write_text(content)
    expect_error(write_suite(tmp_path, minimal()), "p.jsonl: the file is empty, so the suite is empty", "Add prompts")
    (tmp_path / "e.csv").write_text(content)
    expect_error(tmp_path / "e.csv", "e.csv: the file is empty")


def test_empty_dataset_folder(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"prompt": []}).save_to_disk(str(tmp_path / "empty"))
    expect_error(
        write_suite(tmp_path, minimal(source="  dataset: empty\n")),
        "s.yaml: dataset 'empty'",
        "the dataset has no rows",
        "Add prompts",
    )


def test_csv_header_only_is_empty(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("prompt,id\n")
    expect_error(tmp_path / "h.csv", "h.csv: the data has no rows, so the suite is empty", "Add prompts")


@pytest.mark.parametrize("name", ["p.jsonl", "p.csv", "p.json"])
def test_non_utf8_data(tmp_path: Path, name: str) -> None:
    header = b"prompt\n" if name.endswith(".csv") else b""
    body = b'{"prompt": "caf\xe9"}\n' if not name.endswith(".csv") else b"caf\xe9\n"
    (tmp_path / name).write_bytes(header + body)
    expect_error(
        write_suite(tmp_path, minimal(source=f"  path: {name}\n")),
        f"{name}: not UTF-8 text (line",
        "byte 0xe9",
        "Save the file as UTF-8",
    )


def test_non_utf8_yaml(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    expect_error(path, "s.yaml: not UTF-8 text", "Save the file as UTF-8")


def test_bad_json_line(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"prompt": b}\n')
    expect_error(write_suite(tmp_path, minimal()), "p.jsonl: line 2 is not valid JSON", "one JSON object per line")
    (tmp_path / "q.jsonl").write_text('{"prompt": "a"}\n["b"]\n')
    expect_error(tmp_path / "q.jsonl", "q.jsonl: line 2 is ['b'] (list), not a JSON object")


def test_corrupt_json(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('[{"prompt": "a"}, {"prompt": ')
    expect_error(tmp_path / "p.json", "p.json: cannot read it as JSON (", "Fix the file or convert it.")


def test_corrupt_parquet(tmp_path: Path) -> None:
    (tmp_path / "p.parquet").write_text("not parquet at all")
    expect_error(
        write_suite(tmp_path, minimal(source="  path: p.parquet\n")),
        "p.parquet: cannot read it as Parquet",
        "Fix the file",
    )


def test_dataset_not_available_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    path = write_suite(tmp_path, minimal(source="  dataset: no-such-org/no-such-dataset-xyz\n"))
    expect_error(
        path,
        "s.yaml: dataset 'no-such-org/no-such-dataset-xyz' (split 'train')",
        "save it with Dataset.save_to_disk",
    )


def test_dataset_folder_missing(tmp_path: Path) -> None:
    path = write_suite(tmp_path, minimal(source="  dataset: ./data/saved\n"))
    expect_error(path, "s.yaml: source.dataset './data/saved' is not a folder", "Fix the path")


# -- inputs that raised other exceptions (tests/test_fuzz_loaders.py) ----------------------------


@pytest.mark.parametrize(
    ("source", "parts"),
    [
        (f"  path: {'a' * 300}.jsonl\n", ["s.yaml: source.path 'aaa", "cannot be looked up (File name too long)"]),
        (f"  dataset: {'a' * 300}\n", ["s.yaml: source.dataset 'aaa", "cannot be looked up"]),
        ("  path: ~nosuchuser/p.jsonl\n", ["s.yaml: source.path '~nosuchuser/p.jsonl' starts with a '~'", "full path"]),
        ("  dataset: ~nosuchuser/d\n", ["s.yaml: source.dataset '~nosuchuser/d' starts with a '~'"]),
    ],
)  # fmt: skip
def test_paths_the_system_refuses(tmp_path: Path, source: str, parts: list[str]) -> None:
    # Were OSError (a name over 255 bytes) and RuntimeError (no such user for '~').
    expect_error(write_suite(tmp_path, minimal(source=source), ROWS), *parts)


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        (minimal().replace('"1"', "0x" + "f" * 3600), ["s.yaml: invalid YAML at line 2: an integer of 14400 bits"]),
        (minimal("generation: {top_k: 0x" + "f" * 3600 + "}\n"), ["line 5: an integer of 14400 bits is beyond any"]),
        (minimal().replace("name: s", 'name: "\\ud800"'), ["line 1: \\ud800 is a lone surrogate", "Remove that"]),
    ],
)  # fmt: skip
def test_yaml_values_no_setting_can_hold(tmp_path: Path, body: str, parts: list[str]) -> None:
    # Were ValueError (an integer over 4300 digits cannot be printed) and, for the lone
    # surrogate, a Suite whose name could not be stored or printed.
    expect_error(write_suite(tmp_path, body, ROWS), *parts)


@pytest.mark.parametrize(
    ("row", "part"),
    [
        ('{"prompt": "\\ud800"}', "row 1: the prompt in column 'prompt' holds \\ud800, a lone surrogate"),
        ('{"messages": [{"role": "user", "content": "x\\udfff"}]}', "row 1: message 1 holds \\udfff"),
        ('{"prompt": "Hi.", "category": "\\udc80"}', "row 1: the category holds \\udc80"),
        ("[" * 100_000, "line 1 is nested too deeply to read"),
    ],
)
def test_json_lines_no_prompt_can_hold(tmp_path: Path, row: str, part: str) -> None:
    # Were UnicodeEncodeError (hashing the prompt) and RecursionError.
    (tmp_path / "p.jsonl").write_text(row + "\n", encoding="utf-8")
    expect_error(tmp_path / "p.jsonl", f"p.jsonl: {part}")


@pytest.mark.parametrize(
    "content",
    [
        "null",
        "nullnull",  # not JSON: pyarrow crashed on it all the same
        '\n null\n{"prompt": "Hi."}\n',  # JSON Lines in a .json file
        '[null, {"prompt": "Hi."}]',  # datasets rewrites an array of objects as JSON Lines: null first
        '[NaN, {"prompt": "Hi."}]',  # NaN becomes null there
        '[0.0e99999, {"prompt": "Hi."}]',  # and so does this (ujson reads it as NaN)
    ],
)
def test_json_file_whose_first_row_is_null(tmp_path: Path, content: str) -> None:
    # pyarrow's JSON reader crashed the process on these (a segmentation fault).
    (tmp_path / "p.json").write_text(content, encoding="utf-8")
    expect_error(tmp_path / "p.json", "p.json: the first row is not a JSON object (it starts ", "Write the rows")
    (tmp_path / "q.json").write_text('[{"prompt": "Hi."}, null]', encoding="utf-8")  # a later null is a row
    expect_error(tmp_path / "q.json", "q.json: row 2: empty prompt")


# -- robustness --------------------------------------------------------------------------------------

FRAGMENTS = [
    "name: s\n",
    "version: 1\n",
    'version: "1.0"\n',
    "source:\n",
    "  path: p.jsonl\n",
    "  path: nope.csv\n",
    "  dataset: ./nope\n",
    "  field: prompt\n",
    "  messages_field: prompt\n",
    "  id_field: id\n",
    "generation:\n",
    "  max_new_tokens: ",
    "  temperature: ",
    "  top_p: ",
    "limit: ",
    "description: ",
    "-1",
    "0",
    "1.5",
    ".nan",
    "1e999",
    "99999999999999999999999",
    "null",
    "true",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\n",
    "  ",
    "'",
    '"',
    "&a ",
    "*a",
    "!!python/object:os.system ",
    "!!binary x",
    "? ",
    "|\n",
    "#",
    "\t",
    "2024-13-40",
    "<<: *a\n",
    "---\n",
    "%YAML 1.1\n",
    "\x00",
    "\u2028",
    "é",
]


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import datasets

    folder = tmp_path_factory.mktemp("fuzz")
    write_jsonl(folder / "p.jsonl", ROWS)
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder / "saved"))
    return folder


def check_load(path: Path) -> None:
    """Loading either works or fails with one line that names a file."""
    try:
        suite = load_suite(path)
    except UserInputError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1, message
        assert message.startswith(str(path.parent)), message
    else:
        assert suite.prompts
        gen = suite.generation
        assert gen.max_new_tokens >= 1 and gen.samples_per_prompt >= 1 and gen.top_k >= 0
        assert gen.temperature > 0 and 0 < gen.top_p <= 1


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=30).map("".join),
    )
)
def test_yaml_loader_only_raises_user_input_error(fuzz_dir: Path, text: str) -> None:
    path = fuzz_dir / "s.yaml"
    path.write_text(text, encoding="utf-8")
    check_load(path)


NAMES = st.sampled_from(["p.jsonl", "saved", "prompt", "id", "category", "messages", "train", "org/name", "s"])
VALUES = st.one_of(
    NAMES,
    st.none(),
    st.booleans(),
    st.integers(-2, 300),
    st.floats(-2, 3),
    st.sampled_from([float("nan"), float("inf"), 10**30]),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
)
SOURCES = st.one_of(
    st.fixed_dictionaries({"path": st.just("p.jsonl")}, optional={k: NAMES for k in ("field", "id_field", "split")}),
    st.dictionaries(
        st.sampled_from(
            [
                "path",
                "dataset",
                "config",
                "split",
                "field",
                "messages_field",
                "id_field",
                "category_field",
                "pth",
            ]
        ),
        VALUES,
        max_size=4,
    ),
    VALUES,
)
GENERATIONS = st.one_of(
    st.dictionaries(st.sampled_from([*GenerationDefaults.__dataclass_fields__, "max_new_token"]), VALUES, max_size=3),
    VALUES,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=st.fixed_dictionaries(
        {},
        optional={
            "name": VALUES,
            "version": VALUES,
            "source": SOURCES,
            "limit": VALUES,
            "generation": GENERATIONS,
            "description": VALUES,
            "nmae": VALUES,
        },
    )
)
def test_structured_suites_only_raise_user_input_error(fuzz_dir: Path, config: dict[str, Any]) -> None:
    import yaml

    path = fuzz_dir / "t.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    check_load(path)


@pytest.mark.parametrize(
    "rows",
    [
        ROWS,
        [{"prompt": "Plain."}, {"prompt": "Tagged.", "category": "x"}, {"prompt": "More.", "category": None}],
        [{"prompt": "Plain."}, {"id": 7, "prompt": "Numbered."}],
        CHATS,
        [*CHATS, {"messages": [{"role": "user", "content": "Hi", "name": "u"}]}],
        [{"prompt": CHATS[1]["messages"]}, {"prompt": "Plain text."}],
        [{"prompt": "Same."}, {"prompt": "Same."}],
        [{"prompt": "   "}],
    ],
    ids=["ids-and-categories", "category-missing", "id-missing", "chat", "extra-message-key", "chat-and-text",
         "duplicates", "blank"],
)  # fmt: skip
def test_json_lines_read_here_give_what_datasets_gives(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    """JSON Lines are parsed without ``datasets``; the same rows as a JSON array go through
    ``datasets``: the same prompts (ids, texts, messages, categories) and fingerprint, or the
    same error."""

    def outcome(path: Path) -> tuple[Any, ...]:
        try:
            suite = load_suite(path)
        except UserInputError as exc:
            return ("error", str(exc).replace(str(path), "FILE"))
        return ("suite", suite.prompts, suite.fingerprint)

    array = tmp_path / "p.json"
    array.write_text(json.dumps(rows), encoding="utf-8")
    assert outcome(write_jsonl(tmp_path / "p.jsonl", rows)) == outcome(array)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("train.jsonl", 'null\n{"prompt": "x"}\n', "train.jsonl: the first line is not a JSON object (it starts 'null"),
        ("train.json", '[null, {"prompt": "x"}]', "train.json: the first row is not a JSON object (it starts 'null"),
        ("train.json", "null", "train.json: the first row is not a JSON object (it starts 'null"),
    ],
)
def test_a_dataset_folder_whose_json_data_starts_with_null_is_refused_before_pyarrow_reads_it(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    # pyarrow's JSON reader ends the whole process with a segmentation fault on such data
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / name).write_text(content)
    suite = tmp_path / "s.yaml"
    suite.write_text('name: s\nversion: "1"\nsource:\n  dataset: ./data\n')
    with pytest.raises(UserInputError) as error:
        load_suite(suite)
    assert message in str(error.value) and "\n" not in str(error.value)

"""Prompt suites: versioned YAML files over a local data file or a ``datasets`` dataset.

A suite names its prompts' source (``source.path`` or ``source.dataset``), a version, an
optional limit and the generation defaults (``records.GenerationDefaults``). Loading checks
everything a run depends on before any model is loaded; bad input raises ``UserInputError``
with one line that names the file and the fix. The schema is documented in ``docs/suites.md``.

Identity: a prompt's id is the hash of its content (``content_hash(text)``, or of its messages
as ``[{"role", "content"}, ...]``), so the same prompt has the same id in every suite; a
suite's fingerprint is the hash of its ordered prompt ids.
"""

from __future__ import annotations

import difflib
import json
import math
import reprlib
import tempfile
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from rlhf_eval.errors import UserInputError, did_you_mean
from rlhf_eval.records import GenerationDefaults, Prompt, Suite, content_hash

SUITE_KEYS = ("name", "version", "description", "source", "limit", "generation")
REQUIRED_KEYS = ("name", "version", "source")
SOURCE_KEYS = ("path", "dataset", "config", "split", "field", "messages_field", "id_field", "category_field")
GENERATION_KEYS = tuple(f.name for f in fields(GenerationDefaults))
DATA_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
YAML_SUFFIXES = (".yaml", ".yml")
ROLES = ("system", "user", "assistant", "tool")
FEW_PROMPTS = 20
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 50, 50

_EXAMPLES = {"name": "name: my-suite", "version": 'version: "1.0"', "source": "source: {path: prompts.jsonl}"}
# (minimum, whether the minimum itself is allowed) per generation setting; top_p also has max 1.
_MINIMUMS: dict[str, tuple[float, bool]] = {
    "max_new_tokens": (1, True),
    "samples_per_prompt": (1, True),
    "temperature": (0, False),
    "top_p": (0, False),
    "top_k": (0, True),
    "seed": (0, True),
}


@dataclass(frozen=True)
class SuiteReport:
    """What ``rlhf-eval validate`` prints for one suite."""

    name: str
    version: str
    source: str
    n_prompts: int
    n_chat: int
    n_text: int
    categories: dict[str, int]
    fingerprint: str
    warnings: list[str]


@dataclass(frozen=True)
class _Source:
    path: Path | None  # resolved data file
    dataset: str | None  # hub id, or a resolved local folder
    config: str | None = None
    split: str = "train"
    field: str | None = None  # None: "prompt", or "messages" for a bare file without "prompt"
    messages_field: str | None = None
    id_field: str | None = None
    category_field: str | None = None
    where: str = ""  # how errors about the data name it
    bare: bool = False  # a data file given directly, without a YAML


@dataclass(frozen=True)
class _Config:
    name: str
    version: str
    source: _Source
    limit: int | None
    generation: GenerationDefaults
    warnings: tuple[str, ...] = ()


def load_suite(path: str | Path, *, limit: int | None = None) -> Suite:
    """Load and check a suite YAML, or a data file of prompts (.jsonl/.json/.parquet/.csv).

    ``limit`` keeps the first N prompts (the smaller of it and the YAML's ``limit``).

    >>> import json, pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [{"prompt": "Name a prime."}, {"prompt": "Name a colour."}]
    >>> _ = (folder / "mini.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> suite = load_suite(folder / "mini.jsonl", limit=1)
    >>> suite.name, suite.version, [p.text for p in suite.prompts]
    ('mini', '0', ['Name a prime.'])
    """
    return _load(path, limit)[0]


def validate_suite(path: str | Path) -> SuiteReport:
    """Check a suite before any model is loaded; return its counts, fingerprint and warnings."""
    suite, config, n_rows = _load(path, None)
    prompts = suite.prompts
    notes = list(config.warnings)
    if config.limit is not None and n_rows > len(prompts):
        notes.append(f"limit {config.limit} keeps {len(prompts)} of the {n_rows} rows of the data")
    if len(prompts) < FEW_PROMPTS:
        notes.append(f"only {len(prompts)} prompts: confidence intervals over prompts will be wide")
    gen = suite.generation
    if gen.temperature != 1.0 or gen.top_p != 1.0 or gen.top_k != 0:
        notes.append(
            f"generation changes the sampled distribution (temperature {gen.temperature}, top_p {gen.top_p}, "
            f"top_k {gen.top_k}): KL is measured under it, not under the policy's own distribution"
        )
    uncategorized = sum(p.category is None for p in prompts)
    if 0 < uncategorized < len(prompts):
        notes.append(f"{uncategorized} prompts have no category")
    padded = [p.index + 1 for p in prompts if p.text is not None and p.text != p.text.strip()]
    if padded:
        notes.append(f"{len(padded)} prompts start or end with whitespace ({_rows(padded)})")
    not_user = [
        p.index + 1 for p in prompts if p.messages is not None and dict(p.messages[-1])["role"] != "user"
    ]
    if not_user:
        notes.append(f"{len(not_user)} chats do not end with a user message ({_rows(not_user)})")
    n_chat = sum(p.messages is not None for p in prompts)
    return SuiteReport(
        name=suite.name,
        version=suite.version,
        source=suite.source,
        n_prompts=len(prompts),
        n_chat=n_chat,
        n_text=len(prompts) - n_chat,
        categories=dict(sorted(Counter(p.category for p in prompts if p.category is not None).items())),
        fingerprint=suite.fingerprint,
        warnings=notes,
    )


# -- the suite file ------------------------------------------------------------------------------


def _load(path: str | Path, limit: int | None) -> tuple[Suite, _Config, int]:
    try:
        return _load_checked(path, limit)
    except UserInputError as exc:
        message = str(exc)
        if len(message.splitlines()) > 1:  # a value from the file brought a line break in
            raise UserInputError(" ".join(message.split())) from exc
        raise


def _load_checked(path: str | Path, limit: int | None) -> tuple[Suite, _Config, int]:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserInputError(f"--limit {limit!r}: must be an integer >= 1 (or left out for every prompt)")
    shown = str(path)
    file = Path(path).expanduser()
    if not file.exists():
        raise UserInputError(f"{shown}: no such file.{_sibling_hint(file) or ' Check the path.'}")
    if file.is_dir():
        raise UserInputError(
            f"{shown}: is a folder. Pass a suite YAML or a data file; a dataset folder goes in a suite YAML "
            "under source.dataset."
        )
    suffix = file.suffix.lower()
    if suffix in YAML_SUFFIXES:
        config = _parse_config(_read_yaml(file, shown), file, shown)
    elif suffix in DATA_FORMATS:
        source = _Source(path=file.resolve(), dataset=None, where=shown, bare=True)
        config = _Config(
            name=file.stem, version="0", source=source, limit=None, generation=GenerationDefaults()
        )
    else:
        raise UserInputError(
            f"{shown}: unknown extension '{file.suffix}'. Pass a suite YAML (.yaml, .yml) or a data file "
            f"({', '.join(DATA_FORMATS)})."
        )
    limits = [n for n in (config.limit, limit) if n is not None]
    prompts, n_rows = _read_prompts(config.source, min(limits) if limits else None)
    src = config.source
    suite = Suite(
        name=config.name,
        version=config.version,
        prompts=tuple(prompts),
        fingerprint=content_hash([p.prompt_id for p in prompts]),
        source=str(src.path) if src.path is not None else str(src.dataset),
        generation=config.generation,
    )
    return suite, config, n_rows


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key, line)
        self.key, self.line = key, line


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(file: Path, shown: str) -> Any:
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{shown}: not UTF-8 text (byte {exc.start}). Save the file as UTF-8.") from exc
    except OSError as exc:
        raise UserInputError(
            f"{shown}: cannot read the file ({exc.strerror}). Check its permissions."
        ) from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as exc:
        key = _one_line(str(exc.key), 60)
        raise UserInputError(
            f"{shown}: invalid YAML at line {exc.line}: key '{key}' appears twice in one mapping. "
            "Keep one of them."
        ) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = ", ".join(p for p in (exc.context, exc.problem) if p) or "syntax error"
        raise UserInputError(
            f"{shown}: invalid YAML{at}: {_one_line(problem)}. Fix the syntax there (indent with spaces; "
            "quote values that contain ': ' or start with a special character)."
        ) from exc
    except RecursionError as exc:
        raise UserInputError(f"{shown}: invalid YAML: nested too deeply. Write a flat mapping.") from exc
    except Exception as exc:  # reader errors (control characters), bad timestamps, ...
        raise UserInputError(
            f"{shown}: invalid YAML: {_one_line(str(exc))}. Fix the value it names."
        ) from exc


def _parse_config(raw: Any, file: Path, shown: str) -> _Config:
    if not isinstance(raw, Mapping):
        got = "empty" if raw is None else f"a {type(raw).__name__}"
        raise UserInputError(
            f"{shown}: the top level must be a mapping of name, version, source, ...; the file is {got}. "
            "See docs/suites.md for the schema."
        )
    _check_keys(raw, SUITE_KEYS, "at the top level", shown)
    for key in REQUIRED_KEYS:
        if raw.get(key) is None:
            raise UserInputError(f"{shown}: missing required key '{key}'. Add it, e.g. `{_EXAMPLES[key]}`.")
    name = raw["name"]
    if not isinstance(name, str) or not name.strip():
        raise UserInputError(
            f"{shown}: name must be a non-empty string, got {_show(name)}. Write e.g. `name: my-suite`."
        )
    version = raw["version"]
    notes: list[str] = []
    if isinstance(version, (int, float)) and not isinstance(version, bool) and _finite(version):
        notes.append(
            f'version {version} is written as a number; quote it (version: "{version}") to keep it exact'
        )
        version = str(version)
    if not isinstance(version, str) or not version.strip():
        raise UserInputError(
            f'{shown}: version must be a string, got {_show(version)}. Write e.g. `version: "1.0"`.'
        )
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise UserInputError(f"{shown}: description must be a string, got {_show(description)}. Quote it.")
    limit = raw.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserInputError(
            f"{shown}: limit must be an integer >= 1, got {_show(limit)}. Fix it or remove the key."
        )
    return _Config(
        name=name,
        version=version,
        source=_parse_source(raw["source"], file, shown),
        limit=limit,
        generation=_parse_generation(raw.get("generation"), shown),
        warnings=tuple(notes),
    )


def _parse_source(raw: Any, file: Path, shown: str) -> _Source:
    if not isinstance(raw, Mapping):
        raise UserInputError(
            f"{shown}: source must be a mapping, got {_show(raw)}. "
            "Write e.g. `source: {path: prompts.jsonl}`."
        )
    _check_keys(raw, SOURCE_KEYS, "in source", shown)
    values: dict[str, str | None] = {}
    for key in SOURCE_KEYS:
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise UserInputError(
                f"{shown}: source.{key} must be a non-empty string, got {_show(value)}. "
                "Write it as text (quote it if YAML reads it as a number) or remove the key."
            )
        values[key] = value
    path, dataset = values["path"], values["dataset"]
    if (path is None) == (dataset is None):
        which = "both 'path' and 'dataset'" if path is not None else "neither 'path' nor 'dataset'"
        raise UserInputError(
            f"{shown}: source has {which}. Give exactly one: path (a local .jsonl/.json/.parquet/.csv "
            "file) or dataset (a datasets hub id or a local dataset folder)."
        )
    if values["field"] is not None and values["messages_field"] is not None:
        raise UserInputError(
            f"{shown}: source has both 'field' and 'messages_field'. Keep one: field for a text column, "
            "messages_field for a chat column."
        )
    columns = _Source(
        path=None,
        dataset=None,
        field=values["field"],
        messages_field=values["messages_field"],
        id_field=values["id_field"],
        category_field=values["category_field"],
    )
    folder = file.parent
    if path is not None:
        for key in ("config", "split"):
            if values[key] is not None:
                raise UserInputError(
                    f"{shown}: source.{key} applies only to source.dataset. "
                    "Remove it (a data file has one split)."
                )
        data = folder / Path(path).expanduser()
        where = str(Path(shown).parent / Path(path).expanduser())
        if not data.is_file():
            state = "is a folder" if data.is_dir() else "does not exist"
            raise UserInputError(
                f"{shown}: source.path '{path}' {state} (looked for {where}, relative to the suite's "
                "folder). Fix the path or create the file."
            )
        if data.suffix.lower() not in DATA_FORMATS:
            raise UserInputError(
                f"{shown}: source.path '{path}' has an unknown extension '{data.suffix}'. "
                f"Use a {', '.join(DATA_FORMATS)} file."
            )
        return replace(columns, path=data.resolve(), where=where)
    assert dataset is not None
    split = values["split"] or "train"
    local = folder / Path(dataset).expanduser()
    looks_local = dataset.startswith((".", "/", "~")) or dataset.count("/") > 1 or "\\" in dataset
    if local.is_dir():
        resolved = str(local.resolve())
    elif local.exists():
        raise UserInputError(
            f"{shown}: source.dataset '{dataset}' is a file. Use source.path for a data file."
        )
    elif looks_local:
        raise UserInputError(
            f"{shown}: source.dataset '{dataset}' is not a folder (looked for {local}, relative to the "
            "suite's folder). Fix the path, or give a hub id such as org/name."
        )
    else:
        resolved = dataset
    where = f"{shown}: dataset '{dataset}' (split '{split}')"
    return replace(columns, dataset=resolved, config=values["config"], split=split, where=where)


def _parse_generation(raw: Any, shown: str) -> GenerationDefaults:
    if raw is None:
        return GenerationDefaults()
    if not isinstance(raw, Mapping):
        raise UserInputError(
            f"{shown}: generation must be a mapping, got {_show(raw)}. "
            "Write e.g. `generation: {max_new_tokens: 64}`."
        )
    _check_keys(raw, GENERATION_KEYS, "in generation", shown)
    defaults = GenerationDefaults()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        integer = isinstance(getattr(defaults, key), int)
        minimum, inclusive = _MINIMUMS[key]
        bound = f"{'>=' if inclusive else '>'} {minimum}" + (" and <= 1" if key == "top_p" else "")
        expected = f"{'an integer' if integer else 'a number'} {bound}"
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        ok = (
            ok_type
            and not isinstance(value, bool)
            and _finite(value)
            and (value >= minimum if inclusive else value > minimum)
            and (key != "top_p" or value <= 1)
        )
        if not ok:
            raise UserInputError(
                f"{shown}: generation.{key} must be {expected}, got {_show(value)}. Fix the value."
            )
        values[key] = value if integer else float(value)
    return GenerationDefaults(**values)


def _check_keys(raw: Mapping[Any, Any], allowed: tuple[str, ...], where: str, shown: str) -> None:
    for key in raw:
        if key not in allowed:
            raise UserInputError(
                f"{shown}: unknown key '{_one_line(str(key), 60)}' {where}.{did_you_mean(str(key), allowed)} "
                f"Allowed: {', '.join(allowed)}."
            )


# -- the data ------------------------------------------------------------------------------------


def _read_prompts(source: _Source, limit: int | None) -> tuple[list[Prompt], int]:
    """The prompts of the first ``limit`` rows, checked; also the number of rows in the data."""
    if source.path is not None:
        _precheck_file(source.path, source.where)
    dataset = _open(source)
    n_rows = len(dataset)
    if n_rows == 0:
        raise UserInputError(f"{source.where}: the data has no rows, so the suite is empty. Add prompts.")
    columns = list(dataset.column_names)
    text_col, chat_col = _prompt_column(source, columns)
    for key, column in (("id_field", source.id_field), ("category_field", source.category_field)):
        if column is not None and column not in columns:
            raise _missing_column(source, f"source.{key}", column, columns)
    # A bare data file uses its "id" and "category" columns when it has them.
    id_col = source.id_field or ("id" if source.bare and "id" in columns else None)
    category_col = source.category_field or ("category" if source.bare and "category" in columns else None)
    n = n_rows if limit is None else min(limit, n_rows)
    if n < n_rows:
        dataset = dataset.select(range(n))
    wanted = {c for c in (text_col, chat_col, id_col, category_col) if c is not None}
    data = dataset.select_columns(sorted(wanted)).to_dict()
    ids = _ids(data[id_col], id_col, source.where) if id_col is not None else None

    prompts: list[Prompt] = []
    first_row: dict[str, int] = {}
    duplicates: dict[str, list[int]] = defaultdict(list)
    for i in range(n):
        label = f"row {i + 1}" + (f" (id '{ids[i]}')" if ids is not None else "")
        if chat_col is not None:
            text, messages = None, _messages(data[chat_col][i], label, chat_col, source.where)
        else:
            assert text_col is not None
            text, messages = _text_or_chat(data[text_col][i], label, text_col, source.where)
        prompt_id = content_hash(text) if messages is None else content_hash([dict(m) for m in messages])
        if prompt_id in first_row:
            duplicates[prompt_id].append(i + 1)
        else:
            first_row[prompt_id] = i + 1
        category = data[category_col][i] if category_col is not None else None
        category = None if _missing(category) or category == "" else str(category)
        prompts.append(Prompt(prompt_id=prompt_id, index=i, text=text, messages=messages, category=category))
    if duplicates:
        groups = [[first_row[pid], *rows] for pid, rows in duplicates.items()]
        shown = "; ".join(_rows(g) for g in groups[:3]) + (
            f"; and {len(groups) - 3} more" if len(groups) > 3 else ""
        )
        raise UserInputError(f"{source.where}: duplicate prompts: {shown}. Remove the duplicate rows.")
    return prompts, n_rows


def _prompt_column(source: _Source, columns: list[str]) -> tuple[str | None, str | None]:
    """(text column, chat column): exactly one is set."""
    if source.messages_field is not None:
        if source.messages_field not in columns:
            raise _missing_column(source, "source.messages_field", source.messages_field, columns)
        return None, source.messages_field
    if source.field is not None:
        if source.field not in columns:
            raise _missing_column(source, "source.field", source.field, columns)
        return source.field, None
    if "prompt" in columns:
        return "prompt", None
    if source.bare and "messages" in columns:
        return None, "messages"
    if source.bare:
        raise UserInputError(
            f"{source.where}: no 'prompt' or 'messages' column (columns: {', '.join(columns)}). Rename the "
            "prompt column to 'prompt' (text) or 'messages' (chat), or write a suite YAML with source.field."
        )
    raise _missing_column(source, "source.field", "prompt", columns)


def _missing_column(source: _Source, key: str, column: str, columns: list[str]) -> UserInputError:
    default = " (the default)" if key == "source.field" and source.field is None else ""
    chat = (
        " For chats set source.messages_field: messages."
        if key == "source.field" and "messages" in columns
        else ""
    )
    return UserInputError(
        f"{source.where}: no column '{column}' for {key}{default}.{did_you_mean(column, columns)} "
        f"Columns: {', '.join(columns)}. Set {key} to one of them.{chat}"
    )


def _ids(values: list[Any], column: str, where: str) -> list[str]:
    ids: list[str] = []
    rows: dict[str, list[int]] = defaultdict(list)
    for i, value in enumerate(values):
        if _missing(value) or value == "":
            raise UserInputError(
                f"{where}: row {i + 1} has no id in column '{column}'. Give every row an id."
            )
        ids.append(str(value))
        rows[str(value)].append(i + 1)
    repeated = [(key, r) for key, r in rows.items() if len(r) > 1]
    if repeated:
        shown = "; ".join(f"'{key}' in {_rows(r)}" for key, r in repeated[:3])
        more = f"; and {len(repeated) - 3} more" if len(repeated) > 3 else ""
        raise UserInputError(
            f"{where}: duplicate ids in column '{column}': {shown}{more}. "
            "Remove the duplicates or make the ids unique."
        )
    return ids


def _text_or_chat(value: Any, label: str, column: str, where: str) -> tuple[str | None, Any]:
    """A text cell, or a list of messages in it (TRL's conversational "prompt" column)."""
    if isinstance(value, (list, tuple)):
        return None, _messages(value, label, column, where)
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        raise UserInputError(
            f"{where}: {label}: empty prompt in column '{column}'. Write the prompt or remove the row."
        )
    if not isinstance(value, str):
        raise UserInputError(
            f"{where}: {label}: the prompt in column '{column}' is {_show(value)}, not text. "
            "Write it as a string."
        )
    return value, None


def _messages(value: Any, label: str, column: str, where: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    shape = "Write it as a list of {role, content} mappings, e.g. [{role: user, content: ...}]."
    if not isinstance(value, (list, tuple)) or not value:
        got = "empty" if isinstance(value, (list, tuple)) else _show(value)
        raise UserInputError(
            f"{where}: {label}: messages in column '{column}' are {got}, not a list. {shape}"
        )
    messages = []
    for j, message in enumerate(value, start=1):
        if not isinstance(message, Mapping):
            raise UserInputError(f"{where}: {label}: message {j} is {_show(message)}, not a mapping. {shape}")
        extra = [k for k, v in message.items() if k not in ("role", "content") and v is not None]
        if extra:
            raise UserInputError(
                f"{where}: {label}: message {j} has key '{extra[0]}'; only role and content are kept. "
                "Remove it."
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise UserInputError(
                f"{where}: {label}: message {j} needs a string role and content, got role {_show(role)} and "
                f"content {_show(content)}. {shape}"
            )
        if role not in ROLES:
            raise UserInputError(
                f"{where}: {label}: message {j} has unknown role '{role}'.{did_you_mean(role, ROLES)} "
                f"Allowed: {', '.join(ROLES)}."
            )
        messages.append((("role", role), ("content", content)))
    if not any(dict(m)["content"].strip() for m in messages):
        raise UserInputError(
            f"{where}: {label}: empty prompt (every message is blank). Write it or remove the row."
        )
    return tuple(messages)


def _precheck_file(path: Path, where: str) -> None:
    """Exact line numbers for text files that are not UTF-8, empty, or (JSON Lines) not JSON."""
    if path.suffix.lower() == ".parquet":
        return
    jsonl = path.suffix.lower() == ".jsonl"
    blank = True
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserInputError(
                    f"{where}: not UTF-8 text (line {lineno}, byte 0x{raw[exc.start]:02x}). "
                    "Save the file as UTF-8."
                ) from exc
            if not line.strip():
                continue
            blank = False
            if jsonl:
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise UserInputError(
                        f"{where}: line {lineno} is not valid JSON ({_one_line(str(exc))}). "
                        "Write one JSON object per line."
                    ) from exc
                if not isinstance(row, dict):
                    raise UserInputError(
                        f"{where}: line {lineno} is {_show(row)}, not a JSON object. "
                        'Write one object per line, e.g. {"prompt": "..."}.'
                    )
    if blank:
        raise UserInputError(f"{where}: the file is empty, so the suite is empty. Add prompts.")


def _open(source: _Source) -> Any:
    """The source as a ``datasets.Dataset``; errors from ``datasets`` become one-line messages."""
    import datasets

    with _quiet_datasets(datasets), tempfile.TemporaryDirectory(prefix="rlhf-eval-suite-") as cache:
        try:
            return _open_dataset(datasets, source, cache)
        except UserInputError:
            raise
        except Exception as exc:
            raise _data_error(exc, source) from exc


def _open_dataset(datasets: Any, source: _Source, cache: str) -> Any:
    # Local data is read into memory through a throwaway cache: an edited file is never served stale.
    local = {"cache_dir": cache, "keep_in_memory": True}
    if source.path is not None:
        fmt = DATA_FORMATS[source.path.suffix.lower()]
        extra = {"keep_default_na": False} if fmt == "csv" else {}  # the prompt "None" stays text
        return datasets.load_dataset(fmt, data_files=str(source.path), split="train", **local, **extra)
    assert source.dataset is not None
    folder = Path(source.dataset)
    if not folder.is_absolute():  # a hub id (local folders were resolved to absolute paths)
        return datasets.load_dataset(source.dataset, source.config, split=source.split)
    if (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file():
        return _saved_split(datasets, folder, source)
    return datasets.load_dataset(str(folder), source.config, split=source.split, **local)


def _saved_split(datasets: Any, folder: Path, source: _Source) -> Any:
    """A folder written by ``save_to_disk``: the Dataset, or the chosen split of a DatasetDict."""
    state = folder / "state.json"
    if state.is_file() and not json.loads(state.read_text(encoding="utf-8")).get("_data_files"):
        # load_from_disk fails on a saved Dataset without rows
        raise UserInputError(f"{source.where}: the dataset has no rows, so the suite is empty. Add prompts.")
    saved = datasets.load_from_disk(str(folder), keep_in_memory=True)
    if not isinstance(saved, datasets.DatasetDict):
        return saved
    if source.split not in saved:
        raise UserInputError(
            f"{source.where}: no split '{source.split}'.{did_you_mean(source.split, list(saved))} "
            f"Splits: {', '.join(saved)}. Set source.split to one of them."
        )
    return saved[source.split]


def _data_error(exc: BaseException, source: _Source) -> UserInputError:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    if any("corresponds to no data" in str(e) for e in chain):  # e.g. a CSV file with a header only
        return UserInputError(f"{source.where}: the data has no rows, so the suite is empty. Add prompts.")
    if any(isinstance(e, UnicodeDecodeError) for e in chain):
        return UserInputError(f"{source.where}: not UTF-8 text. Save the data as UTF-8.")
    if source.path is None and any(isinstance(e, ConnectionError) or "not cached" in str(e) for e in chain):
        return UserInputError(
            f"{source.where}: not in the local datasets cache and the hub cannot be reached (offline). "
            "Download it once with network access, or save it with Dataset.save_to_disk and point "
            "source.dataset to that folder."
        )
    detail = next((e for e in chain if type(e).__name__ != "DatasetGenerationError" and str(e)), exc)
    reason = f"{type(detail).__name__}: {_one_line(str(detail))}"
    if source.path is not None:
        kind = {"json": "JSON", "parquet": "Parquet", "csv": "CSV"}[DATA_FORMATS[source.path.suffix.lower()]]
        return UserInputError(
            f"{source.where}: cannot read it as {kind} ({reason}). Fix the file or convert it."
        )
    return UserInputError(
        f"{source.where}: cannot load it ({reason}). Check source.dataset, source.config and split."
    )


@contextmanager
def _quiet_datasets(datasets: Any) -> Iterator[None]:
    """No progress bars or error logs from ``datasets`` while loading: failures are reported as one line."""
    from datasets.utils import logging as ds_logging

    bars = not datasets.are_progress_bars_disabled()
    level = ds_logging.get_verbosity()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets.disable_progress_bars()
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


# -- small helpers -------------------------------------------------------------------------------


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _sibling_hint(file: Path) -> str:
    """ " Did you mean 'x.yaml'?" for a file next to ``file`` with the same extension and a close name."""
    if not file.parent.is_dir():
        return ""
    names = {p.stem: p.name for p in file.parent.iterdir() if p.suffix.lower() == file.suffix.lower()}
    close = difflib.get_close_matches(file.stem, list(names), n=1, cutoff=0.6)
    return f" Did you mean '{names[close[0]]}'?" if close else ""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _rows(rows: list[int]) -> str:
    """Rows in a sentence.

    >>> _rows([4]), _rows([2, 5]), _rows([1, 2, 3, 4, 5, 6, 7])
    ('row 4', 'rows 2 and 5', 'rows 1, 2, 3, 4, 5 and 2 more')
    """
    if len(rows) == 1:
        return f"row {rows[0]}"
    if len(rows) > 5:
        return f"rows {', '.join(map(str, rows[:5]))} and {len(rows) - 5} more"
    return f"rows {', '.join(map(str, rows[:-1]))} and {rows[-1]}"


def _show(value: Any, width: int = 60) -> str:
    """A value for a one-line message: its repr, shortened, and its type.

    >>> _show("abc"), _show(None)
    ("'abc' (str)", 'null')
    """
    if value is None:
        return "null"
    text = _one_line(_REPR.repr(value), width)
    return f"{text} ({type(value).__name__})"


def _one_line(text: str, width: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."

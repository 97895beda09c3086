"""Reading a suite's prompts from a data file or a ``datasets`` dataset.

This is the half of suite loading that touches the data itself, kept apart from the YAML schema
in ``suites.py``: that module decides where the prompts are (a ``PromptSource``), this one opens
them and checks every row before any model is loaded.

- JSON Lines files are parsed here (every line is checked anyway, ``JsonRows``); other local
  files (.json/.parquet/.csv), hub ids and local dataset folders are read through ``datasets``
  (imported only when such data is read, so the CLI starts fast).
- A row becomes a ``records.Prompt``: text from a text column, or chat messages
  (``[{"role", "content"}, ...]``) from a chat column or a text column that holds a list.
- Missing columns, empty prompts, duplicate prompts and duplicate ids are errors.
- Every failure, ``datasets``' own exceptions included, becomes a one-line ``UserInputError``
  that names the data and the fix.
"""

from __future__ import annotations

import json
import math
import reprlib
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_eval.errors import UserInputError, did_you_mean
from rlhf_eval.records import Prompt, content_hash

DATA_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
ROLES = ("system", "user", "assistant", "tool")
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 50, 50


@dataclass(frozen=True)
class PromptSource:
    """Where a suite's prompts are and which columns hold what; ``suites.py`` builds it."""

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


def read_prompts(source: PromptSource, limit: int | None) -> tuple[list[Prompt], int]:
    """The prompts of the first ``limit`` rows, checked; also the number of rows in the data."""
    parsed = _precheck_file(source.path, source.where) if source.path is not None else None
    dataset = JsonRows(parsed) if parsed is not None else _open(source)
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
        if category is not None:
            _check_unicode(category, f"{source.where}: {label}: the category")
        prompts.append(Prompt(prompt_id=prompt_id, index=i, text=text, messages=messages, category=category))
    if duplicates:
        groups = [[first_row[pid], *rows] for pid, rows in duplicates.items()]
        shown = "; ".join(rows_phrase(g) for g in groups[:3]) + (
            f"; and {len(groups) - 3} more" if len(groups) > 3 else ""
        )
        raise UserInputError(f"{source.where}: duplicate prompts: {shown}. Remove the duplicate rows.")
    return prompts, n_rows


def _prompt_column(source: PromptSource, columns: list[str]) -> tuple[str | None, str | None]:
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


def _missing_column(source: PromptSource, key: str, column: str, columns: list[str]) -> UserInputError:
    default = " (the default)" if key == "source.field" and source.field is None else ""
    chat = " For chats set source.messages_field: messages." if key == "source.field" and "messages" in columns else ""
    return UserInputError(
        f"{source.where}: no column '{column}' for {key}{default}.{did_you_mean(column, columns)} "
        f"Columns: {', '.join(columns)}. Set {key} to one of them.{chat}"
    )


def _ids(values: list[Any], column: str, where: str) -> list[str]:
    ids: list[str] = []
    rows: dict[str, list[int]] = defaultdict(list)
    for i, value in enumerate(values):
        if _missing(value) or value == "":
            raise UserInputError(f"{where}: row {i + 1} has no id in column '{column}'. Give every row an id.")
        ids.append(str(value))
        rows[str(value)].append(i + 1)
    repeated = [(key, r) for key, r in rows.items() if len(r) > 1]
    if repeated:
        shown = "; ".join(f"'{key}' in {rows_phrase(r)}" for key, r in repeated[:3])
        more = f"; and {len(repeated) - 3} more" if len(repeated) > 3 else ""
        raise UserInputError(
            f"{where}: duplicate ids in column '{column}': {shown}{more}. Remove the duplicates or make the ids unique."
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
            f"{where}: {label}: the prompt in column '{column}' is {show_value(value)}, not text. Write it as a string."
        )
    _check_unicode(value, f"{where}: {label}: the prompt in column '{column}'")
    return value, None


def _messages(value: Any, label: str, column: str, where: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    shape = "Write it as a list of {role, content} mappings, e.g. [{role: user, content: ...}]."
    if not isinstance(value, (list, tuple)) or not value:
        got = "empty" if isinstance(value, (list, tuple)) else show_value(value)
        raise UserInputError(f"{where}: {label}: messages in column '{column}' are {got}, not a list. {shape}")
    messages = []
    for j, message in enumerate(value, start=1):
        if not isinstance(message, Mapping):
            raise UserInputError(f"{where}: {label}: message {j} is {show_value(message)}, not a mapping. {shape}")
        extra = [k for k, v in message.items() if k not in ("role", "content") and v is not None]
        if extra:
            raise UserInputError(
                f"{where}: {label}: message {j} has key '{extra[0]}'; only role and content are kept. Remove it."
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise UserInputError(
                f"{where}: {label}: message {j} needs a string role and content, got role {show_value(role)} and "
                f"content {show_value(content)}. {shape}"
            )
        if role not in ROLES:
            raise UserInputError(
                f"{where}: {label}: message {j} has unknown role '{role}'.{did_you_mean(role, ROLES)} "
                f"Allowed: {', '.join(ROLES)}."
            )
        _check_unicode(content, f"{where}: {label}: message {j}")
        messages.append((("role", role), ("content", content)))
    if not any(dict(m)["content"].strip() for m in messages):
        raise UserInputError(f"{where}: {label}: empty prompt (every message is blank). Write it or remove the row.")
    return tuple(messages)


class JsonRows:
    """The rows of a JSON Lines file, parsed while they were checked, with the part of the
    ``datasets.Dataset`` interface ``read_prompts`` uses: reading them needs no ``datasets``
    import (about a second of a command's start). Columns are the keys in order of first
    appearance; a row without a key holds None there, as ``datasets`` reads it."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.column_names = list(dict.fromkeys(key for row in rows for key in row))

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, indices: range) -> JsonRows:
        return JsonRows([self.rows[i] for i in indices])

    def select_columns(self, columns: list[str]) -> JsonRows:
        selected = JsonRows([{c: row.get(c) for c in columns} for row in self.rows])
        selected.column_names = list(columns)
        return selected

    def to_dict(self) -> dict[str, list[Any]]:
        return {c: [row.get(c) for row in self.rows] for c in self.column_names}


def _precheck_file(path: Path, where: str) -> list[dict[str, Any]] | None:
    """Exact line numbers for text files that are not UTF-8, empty, or (JSON Lines) not JSON.
    Returns the rows of a JSON Lines file (None for other formats, which ``datasets`` reads)."""
    if path.suffix.lower() == ".parquet":
        return None
    jsonl = path.suffix.lower() == ".jsonl"
    rows: list[dict[str, Any]] = []
    blank = True
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserInputError(
                    f"{where}: not UTF-8 text (line {lineno}, byte 0x{raw[exc.start]:02x}). Save the file as UTF-8."
                ) from exc
            if not line.strip():
                continue
            blank = False
            if jsonl:
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise UserInputError(
                        f"{where}: line {lineno} is not valid JSON ({one_line(str(exc))}). "
                        "Write one JSON object per line."
                    ) from exc
                except RecursionError as exc:
                    raise UserInputError(
                        f"{where}: line {lineno} is nested too deeply to read. Write one flat JSON object per line."
                    ) from exc
                if not isinstance(row, dict):
                    raise UserInputError(
                        f"{where}: line {lineno} is {show_value(row)}, not a JSON object. "
                        'Write one object per line, e.g. {"prompt": "..."}.'
                    )
                rows.append(row)
    if blank:
        raise UserInputError(f"{where}: the file is empty, so the suite is empty. Add prompts.")
    if path.suffix.lower() == ".json":
        _check_first_row(path.read_text(encoding="utf-8"), where)
    return rows if jsonl else None


def _check_first_row(text: str, where: str) -> None:
    """Refuse a .json file whose first row is null, or in an array neither an object nor a string,
    before ``datasets`` reads it: pyarrow's JSON reader (26.0) crashes the process with a
    segmentation fault when the data starts with null, and ``datasets`` rewrites an array of
    objects as JSON Lines, where a first element NaN, Infinity or null becomes that null. Such
    a file fails to load in any case."""
    blank = " \t\r\n"
    head = text.removeprefix("\ufeff").lstrip(blank)  # datasets drops a byte order mark
    if head.startswith("["):
        first = head[1:].lstrip(blank)
        refused = bool(first) and not first.startswith(("{", '"', "]"))
    else:
        first, refused = head, head.startswith("null")
    if refused:
        raise UserInputError(
            f"{where}: the first row is not a JSON object (it starts {one_line(first, 24)!r}). "
            'Write the rows as objects, e.g. [{"prompt": "..."}].'
        )


def _open(source: PromptSource) -> Any:
    """The source as a ``datasets.Dataset``; errors from ``datasets`` become one-line messages."""
    import datasets

    with _quiet_datasets(datasets), tempfile.TemporaryDirectory(prefix="rlhf-eval-suite-") as cache:
        try:
            return _open_dataset(datasets, source, cache)
        except UserInputError:
            raise
        except Exception as exc:
            raise _data_error(exc, source) from exc


def _open_dataset(datasets: Any, source: PromptSource, cache: str) -> Any:
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
    _precheck_folder(folder)
    return datasets.load_dataset(str(folder), source.config, split=source.split, **local)


def _precheck_folder(folder: Path) -> None:
    """The JSON data files of a local dataset folder, checked as ``_check_first_row`` checks a
    ``.json`` suite file, before ``datasets`` hands them to pyarrow (which crashes the process on
    data that starts with null): a ``.jsonl`` file must start with an object, a ``.json`` file's
    first row must be one. Only the first 64 KB of each file are read."""
    for file in sorted(folder.rglob("*")):
        suffix = file.suffix.lower()
        if suffix not in (".json", ".jsonl") or not file.is_file() or file.name in ("dataset_info.json", "state.json"):
            continue
        with file.open("rb") as handle:
            head = handle.read(65536).decode("utf-8", errors="replace")
        if suffix == ".json":
            _check_first_row(head, str(file))
            continue
        first = head.removeprefix("\ufeff").lstrip(" \t\r\n")
        if first and not first.startswith("{"):
            raise UserInputError(
                f"{file}: the first line is not a JSON object (it starts {one_line(first, 24)!r}). "
                'Write one object per line, e.g. {"prompt": "..."}.'
            )


def _saved_split(datasets: Any, folder: Path, source: PromptSource) -> Any:
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


def _data_error(exc: BaseException, source: PromptSource) -> UserInputError:
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
    reason = f"{type(detail).__name__}: {one_line(str(detail))}"
    if source.path is not None:
        kind = {"json": "JSON", "parquet": "Parquet", "csv": "CSV"}[DATA_FORMATS[source.path.suffix.lower()]]
        return UserInputError(f"{source.where}: cannot read it as {kind} ({reason}). Fix the file or convert it.")
    return UserInputError(f"{source.where}: cannot load it ({reason}). Check source.dataset, source.config and split.")


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


def _check_unicode(text: str, what: str) -> None:
    """Refuse a lone surrogate (JSON's escape "\\ud800" decodes to one): it cannot be stored or printed as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserInputError(
            f"{what} holds \\u{ord(text[exc.start]):04x}, a lone surrogate, not Unicode text. Remove that escape."
        ) from exc


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def rows_phrase(rows: list[int]) -> str:
    """Rows in a sentence.

    >>> rows_phrase([4]), rows_phrase([2, 5]), rows_phrase([1, 2, 3, 4, 5, 6, 7])
    ('row 4', 'rows 2 and 5', 'rows 1, 2, 3, 4, 5 and 2 more')
    """
    if len(rows) == 1:
        return f"row {rows[0]}"
    if len(rows) > 5:
        return f"rows {', '.join(map(str, rows[:5]))} and {len(rows) - 5} more"
    return f"rows {', '.join(map(str, rows[:-1]))} and {rows[-1]}"


def show_value(value: Any, width: int = 60) -> str:
    """A value for a one-line message: its repr, shortened, and its type.

    >>> show_value("abc"), show_value(None)
    ("'abc' (str)", 'null')
    """
    if value is None:
        return "null"
    text = one_line(_REPR.repr(value), width)
    return f"{text} ({type(value).__name__})"


def one_line(text: str, width: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."

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
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from rlhf_eval.errors import UserInputError, did_you_mean
from rlhf_eval.records import GenerationDefaults, Suite, content_hash
from rlhf_eval.suite_data import DATA_FORMATS as DATA_FORMATS
from rlhf_eval.suite_data import ROLES as ROLES
from rlhf_eval.suite_data import PromptSource, one_line, read_prompts, rows_phrase, show_value

SUITE_KEYS = ("name", "version", "description", "source", "limit", "generation")
REQUIRED_KEYS = ("name", "version", "source")
SOURCE_KEYS = ("path", "dataset", "config", "split", "field", "messages_field", "id_field", "category_field")
GENERATION_KEYS = tuple(f.name for f in fields(GenerationDefaults))
YAML_SUFFIXES = (".yaml", ".yml")
FEW_PROMPTS = 20

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
class _Config:
    name: str
    version: str
    source: PromptSource
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
        notes.append(f"{len(padded)} prompts start or end with whitespace ({rows_phrase(padded)})")
    not_user = [p.index + 1 for p in prompts if p.messages is not None and dict(p.messages[-1])["role"] != "user"]
    if not_user:
        notes.append(f"{len(not_user)} chats do not end with a user message ({rows_phrase(not_user)})")
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
    file = _expand(path, shown, "the path")
    kind = _kind(file, shown, "the path")
    if kind == "missing":
        raise UserInputError(f"{shown}: no such file.{_sibling_hint(file) or ' Check the path.'}")
    if kind == "folder":
        raise UserInputError(
            f"{shown}: is a folder. Pass a suite YAML or a data file; a dataset folder goes in a suite YAML "
            "under source.dataset."
        )
    suffix = file.suffix.lower()
    if suffix in YAML_SUFFIXES:
        config = _parse_config(_read_yaml(file, shown), file, shown)
    elif suffix in DATA_FORMATS:
        source = PromptSource(path=file.resolve(), dataset=None, where=shown, bare=True)
        config = _Config(name=file.stem, version="0", source=source, limit=None, generation=GenerationDefaults())
    else:
        raise UserInputError(
            f"{shown}: unknown extension '{file.suffix}'. Pass a suite YAML (.yaml, .yml) or a data file "
            f"({', '.join(DATA_FORMATS)})."
        )
    limits = [n for n in (config.limit, limit) if n is not None]
    prompts, n_rows = read_prompts(config.source, min(limits) if limits else None)
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


class _Refused(Exception):
    def __init__(self, what: str, line: int) -> None:
        super().__init__(what, line)
        self.what, self.line = what, line


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping (plain YAML keeps the last), an
    integer beyond any float (``0x...`` of any length; Python cannot even print one of over 4300
    digits) and text with a lone surrogate (the escape ``"\\ud800"``, which no UTF-8 output takes)."""

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

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value: int = super().construct_yaml_int(node)
        if value.bit_length() > 1024:
            what = f"an integer of {value.bit_length()} bits is beyond any float. Write a smaller number."
            raise _Refused(what, node.start_mark.line + 1)
        return value

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:
        value: str = super().construct_yaml_str(node)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            what = f"\\u{ord(value[exc.start]):04x} is a lone surrogate, not Unicode text. Remove that escape."
            raise _Refused(what, node.start_mark.line + 1) from exc
        return value


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:str", _StrictLoader.construct_yaml_str)


def _read_yaml(file: Path, shown: str) -> Any:
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{shown}: not UTF-8 text (byte {exc.start}). Save the file as UTF-8.") from exc
    except OSError as exc:
        raise UserInputError(f"{shown}: cannot read the file ({exc.strerror}). Check its permissions.") from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as exc:
        key = one_line(str(exc.key), 60)
        raise UserInputError(
            f"{shown}: invalid YAML at line {exc.line}: key '{key}' appears twice in one mapping. Keep one of them."
        ) from exc
    except _Refused as exc:
        raise UserInputError(f"{shown}: invalid YAML at line {exc.line}: {exc.what}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = ", ".join(p for p in (exc.context, exc.problem) if p) or "syntax error"
        raise UserInputError(
            f"{shown}: invalid YAML{at}: {one_line(problem)}. Fix the syntax there (indent with spaces; "
            "quote values that contain ': ' or start with a special character)."
        ) from exc
    except RecursionError as exc:
        raise UserInputError(f"{shown}: invalid YAML: nested too deeply. Write a flat mapping.") from exc
    except Exception as exc:  # reader errors (control characters), bad timestamps, ...
        raise UserInputError(f"{shown}: invalid YAML: {one_line(str(exc))}. Fix the value it names.") from exc


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
            f"{shown}: name must be a non-empty string, got {show_value(name)}. Write e.g. `name: my-suite`."
        )
    version = raw["version"]
    notes: list[str] = []
    if isinstance(version, (int, float)) and not isinstance(version, bool) and _finite(version):
        notes.append(f'version {version} is written as a number; quote it (version: "{version}") to keep it exact')
        version = str(version)
    if not isinstance(version, str) or not version.strip():
        raise UserInputError(
            f'{shown}: version must be a string, got {show_value(version)}. Write e.g. `version: "1.0"`.'
        )
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise UserInputError(f"{shown}: description must be a string, got {show_value(description)}. Quote it.")
    limit = raw.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserInputError(
            f"{shown}: limit must be an integer >= 1, got {show_value(limit)}. Fix it or remove the key."
        )
    return _Config(
        name=name,
        version=version,
        source=_parse_source(raw["source"], file, shown),
        limit=limit,
        generation=_parse_generation(raw.get("generation"), shown),
        warnings=tuple(notes),
    )


def _parse_source(raw: Any, file: Path, shown: str) -> PromptSource:
    if not isinstance(raw, Mapping):
        raise UserInputError(
            f"{shown}: source must be a mapping, got {show_value(raw)}. Write e.g. `source: {{path: prompts.jsonl}}`."
        )
    _check_keys(raw, SOURCE_KEYS, "in source", shown)
    values: dict[str, str | None] = {}
    for key in SOURCE_KEYS:
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise UserInputError(
                f"{shown}: source.{key} must be a non-empty string, got {show_value(value)}. "
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
    columns = PromptSource(
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
                    f"{shown}: source.{key} applies only to source.dataset. Remove it (a data file has one split)."
                )
        relative = _expand(path, shown, f"source.path '{path}'")
        data = folder / relative
        where = str(Path(shown).parent / relative)
        kind = _kind(data, shown, f"source.path '{path}'")
        if kind != "file":
            state = "is a folder" if kind == "folder" else "does not exist"
            raise UserInputError(
                f"{shown}: source.path '{path}' {state} (looked for {where}, relative to the suite's "
                "folder). Fix the path or create the file."
            )
        _inside_folder(folder, data, shown, f"source.path '{path}'")
        if data.suffix.lower() not in DATA_FORMATS:
            raise UserInputError(
                f"{shown}: source.path '{path}' has an unknown extension '{data.suffix}'. "
                f"Use a {', '.join(DATA_FORMATS)} file."
            )
        return replace(columns, path=data.resolve(), where=where)
    assert dataset is not None
    split = values["split"] or "train"
    local = folder / _expand(dataset, shown, f"source.dataset '{dataset}'")
    looks_local = dataset.startswith((".", "/", "~")) or dataset.count("/") > 1 or "\\" in dataset
    kind = _kind(local, shown, f"source.dataset '{dataset}'")
    if kind == "folder":
        _inside_folder(folder, local, shown, f"source.dataset '{dataset}'")
        resolved = str(local.resolve())
    elif kind != "missing":
        raise UserInputError(f"{shown}: source.dataset '{dataset}' is a file. Use source.path for a data file.")
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
            f"{shown}: generation must be a mapping, got {show_value(raw)}. "
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
                f"{shown}: generation.{key} must be {expected}, got {show_value(value)}. Fix the value."
            )
        values[key] = value if integer else float(value)
    return GenerationDefaults(**values)


def _check_keys(raw: Mapping[Any, Any], allowed: tuple[str, ...], where: str, shown: str) -> None:
    for key in raw:
        if key not in allowed:
            raise UserInputError(
                f"{shown}: unknown key '{one_line(str(key), 60)}' {where}.{did_you_mean(str(key), allowed)} "
                f"Allowed: {', '.join(allowed)}."
            )


# -- small helpers -------------------------------------------------------------------------------


def _expand(path: str | Path, shown: str, what: str) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; a user without a home folder is a UserInputError."""
    try:
        return Path(path).expanduser()
    except RuntimeError as exc:  # "~nosuchuser/x"
        raise UserInputError(
            f"{shown}: {what} starts with a '~' that names no home folder here. Write the full path."
        ) from exc


def _inside_folder(folder: Path, target: Path, shown: str, what: str) -> None:
    """Refuse a suite's data path that leads out of the suite's folder: absolute, through ``..``,
    from ``~`` or through a symbolic link. A suite is a file people share; reading only what lies
    next to it keeps one from pulling any file of the machine into the database (and so into
    reports). Data elsewhere can still be evaluated: pass the data file itself as ``--suite``."""
    base = folder.resolve()
    try:
        inside = target.resolve().is_relative_to(base)
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise UserInputError(
            f"{shown}: {what} leads out of the suite's folder ({base}); a suite reads only data inside "
            "its folder. Move the data next to the suite, or pass the data file itself as --suite."
        )


def _kind(path: Path, shown: str, what: str) -> str:
    """'file', 'folder', 'other' (a device, a pipe) or 'missing'; a name the system refuses to look
    up (too long, say) is a UserInputError."""
    try:
        if path.is_file():
            return "file"
        if path.is_dir():
            return "folder"
        return "other" if path.exists() else "missing"
    except OSError as exc:
        raise UserInputError(f"{shown}: {what} cannot be looked up ({exc.strerror}). Fix the path.") from exc


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

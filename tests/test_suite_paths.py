"""A suite reads data only inside its own folder: absolute paths, ``..``, ``~`` and symbolic links
that lead out are refused with one line naming the suite and the fix; data inside (also through a
link that stays inside) loads; a data file passed as ``--suite`` itself loads from anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_eval.errors import UserInputError
from rlhf_eval.suites import load_suite

SECRET = '{"prompt": "a secret from elsewhere"}\n'


def suite_file(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "suite.yaml"
    file.write_text(f'name: s\nversion: "1"\nsource:\n{source}')
    return file


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Data outside the suite's folder: a prompts file and a saved-dataset-like folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.jsonl").write_text(SECRET)
    return elsewhere


@pytest.mark.parametrize(
    "source",
    [
        "  path: {outside}/secret.jsonl\n",  # absolute
        "  path: ../elsewhere/secret.jsonl\n",  # up and out
        "  path: data/../../elsewhere/secret.jsonl\n",  # down, then further up
        "  path: link.jsonl\n",  # a link inside that points out
        "  path: linked/secret.jsonl\n",  # through a linked folder
        "  dataset: {outside}\n",  # a local dataset folder, absolute
        "  dataset: ../elsewhere\n",
        "  dataset: linked\n",
    ],
)
def test_data_outside_the_suite_folder_is_refused(tmp_path: Path, outside: Path, source: str) -> None:
    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / "data").mkdir()
    (folder / "link.jsonl").symlink_to(outside / "secret.jsonl")
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    file = suite_file(folder, source.format(outside=outside))
    with pytest.raises(UserInputError) as error:
        load_suite(file)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{file}: source.")
    assert f"leads out of the suite's folder ({folder.resolve()})" in message
    assert message.endswith("Move the data next to the suite, or pass the data file itself as --suite.")


def test_a_home_relative_path_is_refused(tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(outside))
    file = suite_file(tmp_path / "suites", "  path: ~/secret.jsonl\n")
    with pytest.raises(UserInputError, match=r"source.path '~/secret.jsonl' leads out of the suite's folder"):
        load_suite(file)


def test_data_inside_the_folder_loads_also_through_a_link_that_stays_inside(tmp_path: Path) -> None:
    folder = tmp_path / "suites"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "p.jsonl").write_text(json.dumps({"prompt": "inside"}) + "\n")
    (folder / "alias.jsonl").symlink_to(folder / "data" / "p.jsonl")
    for source in ("  path: data/p.jsonl\n", "  path: ./data/../data/p.jsonl\n", "  path: alias.jsonl\n"):
        assert [p.text for p in load_suite(suite_file(folder, source)).prompts] == ["inside"]


def test_a_data_file_given_as_the_suite_loads_from_anywhere(outside: Path) -> None:
    assert [p.text for p in load_suite(outside / "secret.jsonl").prompts] == ["a secret from elsewhere"]

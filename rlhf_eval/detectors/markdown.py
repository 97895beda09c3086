"""Markdown detectors: headers, list items and bold spans per response.

Chatbot Arena's style control (LMSYS, "Does style matter? Disentangling style and substance in
Chatbot Arena", 2024) regresses preferences on these three counts plus length, because judges
and reward models favour heavily formatted answers. The patterns follow its counting code:
fenced code blocks (```...```) are removed first, so ``# comment`` lines in code are not headers.
Neither direction is better in itself, so ``higher_is_better`` is None.
"""

from __future__ import annotations

import re

from rlhf_eval.detectors.registry import detector

_CODE_BLOCK = re.compile(r"```[^`]*```")
_HEADER = re.compile(r"^#{1,6}[ \t]", re.MULTILINE)
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


def _without_code(text: str) -> str:
    return _CODE_BLOCK.sub("", text)


@detector("md_headers", higher_is_better=None, unit="count")
def md_headers(texts: list[str]) -> list[float]:
    """Lines starting with 1 to 6 ``#`` then a space or tab, outside fenced code blocks.

    No indentation is allowed before the ``#``; ``#tag`` and ``#######`` are not headers. Empty text: 0.0.

    >>> md_headers(["# Title\\n## Part\\ntext #1\\n```\\n# code\\n```", ""])
    [2.0, 0.0]
    """
    return [float(len(_HEADER.findall(_without_code(t)))) for t in texts]


@detector("md_list_items", higher_is_better=None, unit="count")
def md_list_items(texts: list[str]) -> list[float]:
    """Lines starting with ``-``, ``*``, ``+``, ``N.`` or ``N)`` then a space or tab, indentation allowed.

    Counted outside fenced code blocks; ``**bold**`` at a line start is not a list item. Empty text: 0.0.

    >>> md_list_items(["- a\\n  * b\\n1. c\\n2) d\\n**e**", ""])
    [4.0, 0.0]
    """
    return [float(len(_LIST_ITEM.findall(_without_code(t)))) for t in texts]


@detector("md_bold", higher_is_better=None, unit="count")
def md_bold(texts: list[str]) -> list[float]:
    """Bold spans ``**x**`` or ``__x__`` on one line (non-overlapping, left to right), outside code blocks.

    Empty text: 0.0.

    >>> md_bold(["**a** and __b__ and **c", ""])
    [2.0, 0.0]
    """
    return [float(len(_BOLD.findall(_without_code(t)))) for t in texts]

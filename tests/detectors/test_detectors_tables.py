"""Hand-computed values of every detector, edge cases included.

Words are ``text.split()``; each case states its arithmetic in a comment.
"""

from __future__ import annotations

import pytest

from rlhf_eval.detectors import REGISTRY, run_detectors


def value(name: str, text: str) -> float:
    return run_detectors([text], [name])[name][0]


SEQ_REP = [
    # (n, text, expected)
    (1, "", 0.0),  # no words: 0.0 by convention
    (1, "   \n\t ", 0.0),  # whitespace only: no words
    (1, "hello", 0.0),  # 1 unigram, 1 unique: 1 - 1/1
    (2, "hello", 0.0),  # one word, fewer than 2: 0.0 by convention
    (1, "a a a a", 0.75),  # 4 unigrams, 1 unique: 1 - 1/4
    (1, "the cat sat on the mat", 1 / 6),  # 6 unigrams, 5 unique: 1 - 5/6
    (1, "A a", 0.0),  # case-sensitive: 2 unigrams, 2 unique
    (1, "a. a", 0.0),  # punctuation stays attached: "a." != "a"
    (1, "été été 日本 日本", 0.5),  # non-ASCII: 4 unigrams, 2 unique: 1 - 2/4
    (2, "a b a b a b", 0.6),  # 5 bigrams (ab ba ab ba ab), 2 unique: 1 - 2/5
    (2, "to be or not to be", 0.2),  # 5 bigrams, "to be" twice, 4 unique: 1 - 4/5
    (3, "a b c a b c", 0.25),  # 4 trigrams (abc bca cab abc), 3 unique: 1 - 3/4
    (3, "a b", 0.0),  # fewer than 3 words
    (4, "a b c d a b c d", 0.2),  # 5 4-grams, 4 unique: 1 - 4/5
    (4, "x x x x x x", 2 / 3),  # 3 4-grams, all "x x x x": 1 - 1/3
    (4, "a b c d", 0.0),  # 1 4-gram, 1 unique: 1 - 1/1
]


@pytest.mark.parametrize(("n", "text", "expected"), SEQ_REP)
def test_seq_rep(n: int, text: str, expected: float) -> None:
    assert value(f"seq_rep_{n}", text) == pytest.approx(expected, abs=1e-12)


def test_seq_rep_brief_example_is_exact() -> None:
    # 5 bigrams, 2 unique: (5 - 2) / 5 = 0.6 exactly as a float
    assert run_detectors(["a b a b a b"], ["seq_rep_2"]) == {"seq_rep_2": [0.6]}


DISTINCT = [
    (1, "", 0.0),  # no words: 0.0 by convention
    (2, "one", 0.0),  # one word, no bigram: 0.0 by convention
    (1, "one", 1.0),  # 1 unique / 1 unigram
    (1, "the cat the dog", 0.75),  # 3 unique / 4 unigrams
    (1, "a a a a", 0.25),  # 1 unique / 4 unigrams
    (2, "a b a b a b", 0.4),  # 2 unique / 5 bigrams
    (2, "to be or not to be", 0.8),  # 4 unique / 5 bigrams
    (1, "日本 日本 語", 2 / 3),  # non-ASCII: 2 unique / 3 unigrams
    (2, "  \t ", 0.0),  # whitespace only
]


@pytest.mark.parametrize(("n", "text", "expected"), DISTINCT)
def test_distinct(n: int, text: str, expected: float) -> None:
    assert value(f"distinct_{n}", text) == pytest.approx(expected, abs=1e-12)


COMPRESSION = [
    ("", 0.0),  # empty: 0.0 by convention
    ("abc", 3 / 11),  # 3 bytes; zlib: 2 header + 5 deflate + 4 checksum = 11
    ("x" * 60, 5.0),  # 60 bytes; zlib: 12 bytes
    ("ab" * 50, 100 / 13),  # 100 bytes; zlib: 13 bytes
    ("é" * 30, 60 / 13),  # 30 characters but 60 UTF-8 bytes; zlib: 13 bytes
    ("\ud800", 3 / 11),  # a lone surrogate encodes to 3 bytes (surrogatepass); zlib: 11 bytes
]


@pytest.mark.parametrize(("text", "expected"), COMPRESSION)
def test_compression_ratio(text: str, expected: float) -> None:
    assert value("compression_ratio", text) == pytest.approx(expected)


def test_compression_ratio_grows_with_redundancy() -> None:
    # the same 4 sentences repeated 20 times compress far better than once
    once = "The quick brown fox jumps over the lazy dog. " * 1
    many = once * 20
    assert value("compression_ratio", many) > 5 * value("compression_ratio", once)


TAIL_LOOP = [
    ("", 0.0),  # no words
    ("a", 0.0),  # 1 word: at most 1 copy
    ("a a", 0.0),  # 2 copies of "a"
    ("a a a", 1.0),  # 3 copies of "a" (L = 1)
    ("ha ha ha", 1.0),  # 3 copies of "ha": also flags natural text
    ("x y z y z y z", 1.0),  # ends in "y z" x 3 (L = 2)
    ("y z y z", 0.0),  # "y z" x 2 only
    ("a b a b a b a", 1.0),  # ends in "b a" x 3: the loop need not start at a span boundary
    ("a b c a b c a b c d", 0.0),  # a loop, but not at the end
    ("a b c a b c a b", 0.0),  # L=1: "c a b" differ; L=2: "c a", "b c", "a b" differ
    ("Thank you. Thank you. Thank you.", 1.0),  # "Thank you." x 3 (L = 2)
    ("one two three four " * 3, 1.0),  # L = 4, trailing whitespace ignored
    ("the end. The end. the end.", 0.0),  # case-sensitive: "The" != "the"
    ("日本 日本 日本", 1.0),  # non-ASCII words
    ("   ", 0.0),  # whitespace only
]


@pytest.mark.parametrize(("text", "expected"), TAIL_LOOP)
def test_tail_loop(text: str, expected: float) -> None:
    assert value("tail_loop", text) == expected


def test_tail_loop_fast_on_long_texts() -> None:
    import time

    # Worst cases for the O(n^2) scan: no loop (every L tried) and "a ... a b" (each comparison
    # runs to the end of the slice before failing). 2,000 words each, 30 texts.
    distinct_words = " ".join(f"w{i}" for i in range(2000))
    almost_loop = " ".join(["a"] * 1999 + ["b"])
    long_loop = " ".join(f"w{i}" for i in range(200)) + (" " + " ".join(f"s{i}" for i in range(600))) * 3
    texts = [distinct_words] * 10 + [almost_loop] * 10 + [long_loop] * 10
    start = time.perf_counter()
    out = run_detectors(texts, ["tail_loop"])["tail_loop"]
    elapsed = time.perf_counter() - start
    assert out == [0.0] * 20 + [1.0] * 10
    assert elapsed < 1.0, f"tail_loop took {elapsed:.2f} s on 30 texts of 2,000 words"


LENGTH_CHARS = [
    ("", 0.0),
    ("hello", 5.0),  # 5 ASCII characters
    ("héllo", 5.0),  # 5 code points (6 UTF-8 bytes)
    ("日本語", 3.0),  # 3 code points (9 UTF-8 bytes)
    ("a b\n", 4.0),  # whitespace counts: a, space, b, newline
    ("👍🏽", 2.0),  # thumbs-up + skin-tone modifier: 2 code points, 1 glyph
    ("   ", 3.0),  # whitespace only still has characters
]


@pytest.mark.parametrize(("text", "expected"), LENGTH_CHARS)
def test_length_chars(text: str, expected: float) -> None:
    assert value("length_chars", text) == expected


LENGTH_WORDS = [
    ("", 0.0),
    (" \n\t ", 0.0),  # whitespace only
    ("one", 1.0),
    ("a  b\nc\td", 4.0),  # any whitespace run separates words
    ("Hello, world!", 2.0),  # punctuation attached: "Hello," and "world!"
    ("日本語 テキスト", 2.0),  # non-ASCII words split on the space only
    ("a\u00a0b", 2.0),  # a no-break space is whitespace for str.split
]


@pytest.mark.parametrize(("text", "expected"), LENGTH_WORDS)
def test_length_words(text: str, expected: float) -> None:
    assert value("length_words", text) == expected


MD_HEADERS = [
    ("", 0.0),
    ("# A", 1.0),
    ("###### A", 1.0),  # 6 hashes: h6
    ("####### A", 0.0),  # 7 hashes: not a header
    ("#A", 0.0),  # no space after the hashes (a hashtag)
    (" # A", 0.0),  # indented: not counted
    ("#\tA", 1.0),  # a tab counts as the space
    ("text # not a header", 0.0),  # not at a line start
    ("# A\n## B\ntext\n### C", 3.0),  # lines 1, 2 and 4
    ("```\n# comment\n```\n# Real", 1.0),  # the fenced code block is removed first
    ("# Título\n## 日本", 2.0),  # non-ASCII headers
]


@pytest.mark.parametrize(("text", "expected"), MD_HEADERS)
def test_md_headers(text: str, expected: float) -> None:
    assert value("md_headers", text) == expected


MD_LIST_ITEMS = [
    ("", 0.0),
    ("- a", 1.0),
    ("* a\n+ b\n- c", 3.0),  # the three bullet characters
    ("1. a\n2) b\n10. c", 3.0),  # "N." and "N)" with any number of digits
    ("  - nested\n\t- tab", 2.0),  # indentation by spaces or a tab
    ("-a", 0.0),  # no space after the bullet
    ("**bold** start", 0.0),  # "*" followed by "*", not a space
    ("1.5 is a number", 0.0),  # "1." followed by "5"
    ("text - not an item", 0.0),  # not at a line start
    ("```\n- x\n```\n- y", 1.0),  # the item in the code block is not counted
    ("- café\n- 日本", 2.0),  # non-ASCII items
]


@pytest.mark.parametrize(("text", "expected"), MD_LIST_ITEMS)
def test_md_list_items(text: str, expected: float) -> None:
    assert value("md_list_items", text) == expected


MD_BOLD = [
    ("", 0.0),
    ("**a**", 1.0),
    ("__a__", 1.0),
    ("**a** and **b** and __c__", 3.0),  # two ** spans + one __ span
    ("**a\nb**", 0.0),  # a span may not cross a line break
    ("****", 0.0),  # empty span
    ("**unclosed", 0.0),
    ("**日本**", 1.0),  # non-ASCII content
    ("```\n**x**\n```", 0.0),  # inside a fenced code block
    ("snake__case__name", 1.0),  # "__case__" matches, as in Arena's counting
]


@pytest.mark.parametrize(("text", "expected"), MD_BOLD)
def test_md_bold(text: str, expected: float) -> None:
    assert value("md_bold", text) == expected


PHRASE_FLAGS = [
    # (detector, text, expected)
    ("hedge", "As an AI language model, I cannot do that.", 1.0),
    ("hedge", "AS  AN\nAI, I think", 1.0),  # case and whitespace runs normalised
    ("hedge", "I’m an AI.", 1.0),  # right single quotation mark for the apostrophe
    ("hedge", "I'm an AI.", 1.0),  # straight apostrophe
    ("hedge", "I don’t have personal feelings.", 1.0),
    ("hedge", "Let me know as an aid to memory.", 0.0),  # "as an aid": word boundary
    ("hedge", "Paris is the capital of France.", 0.0),
    ("hedge", "Je suis une IA.", 0.0),  # the lists are English
    ("hedge", "", 0.0),
    ("apology", "I apologize for the confusion.", 1.0),
    ("apology", "i’m SORRY", 1.0),
    ("apology", "Sorry for the delay.", 1.0),
    ("apology", "My apologies.", 1.0),
    ("apology", "Sorryfor", 0.0),  # no space: not the phrase
    ("apology", "A sorry state of affairs.", 0.0),  # "sorry" alone is not listed
    ("apology", "", 0.0),
    ("refusal", "I can't help with that.", 1.0),
    ("refusal", "I cannot assist with this request.", 1.0),
    ("refusal", "I’m unable to do that.", 1.0),
    ("refusal", "I can help with that.", 0.0),
    ("refusal", "", 0.0),
    ("closer", "I hope this helps!", 1.0),
    ("closer", "Let me know if you have any other questions.", 1.0),
    ("closer", "Feel free\nto ask.", 1.0),
    ("closer", "Happy to help.", 1.0),
    ("closer", "This helps.", 0.0),
    ("closer", "", 0.0),
]


@pytest.mark.parametrize(("name", "text", "expected"), PHRASE_FLAGS)
def test_phrase_flags(name: str, text: str, expected: float) -> None:
    assert value(name, text) == expected


def test_every_detector_has_a_table() -> None:
    tested = {f"seq_rep_{n}" for n, _, _ in SEQ_REP} | {f"distinct_{n}" for n, _, _ in DISTINCT}
    tested |= {"compression_ratio", "tail_loop", "length_chars", "length_words"}
    tested |= {"md_headers", "md_list_items", "md_bold"} | {name for name, _, _ in PHRASE_FLAGS}
    missing = sorted(set(REGISTRY) - tested)
    assert not missing, f"add a table of hand-computed values for: {', '.join(missing)}"

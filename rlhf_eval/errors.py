"""Domain errors.

The library raises these; the CLI turns each into one line on stderr and exit code 2.
Every message names the file or argument at fault and says how to fix it.
"""

from __future__ import annotations


class RlhfEvalError(Exception):
    """Base class of every error the harness raises on purpose."""


class UserInputError(RlhfEvalError):
    """Bad input from the user: a path, a file's content, a flag. Exit code 2.

    The message is one line: what is wrong, where, and the fix.
    """


class StoreError(RlhfEvalError):
    """The database cannot be opened or written (lock held, corrupted file)."""


class DatabaseLocked(StoreError):
    """Another process held the database's lock for longer than we were willing to wait."""


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ' Did you mean: X?' suffix when a close match exists, else ''.

    >>> did_you_mean("max_new_token", ["max_new_tokens", "seed"])
    " Did you mean 'max_new_tokens'?"
    >>> did_you_mean("zzz", ["seed"])
    ''
    """
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""

"""Errors the user can fix: a misspelt config field, a missing file, a checkpoint that
does not fit the config, an unusable input.

Raised where the problem is found, with a message that says what, where, what was
expected and, when one is likely, a suggestion. `python -m lensfm.main` prints only
that message and exits with status 2 (`--verbosity=1` adds the traceback); any other
exception is a bug and keeps its traceback. Every floor of lensfm may import this module.
"""
import difflib
from typing import Iterable


class UserError(ValueError):
  """A problem with what the user asked for, not with lensfm; the message is the report."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or directory the user named does not exist (or holds nothing usable)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
  """' Did you mean "x"?' for the closest of `known`, or '' when none is close."""
  match = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
  return f' Did you mean "{match[0]}"?' if match else ""

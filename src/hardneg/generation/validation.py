"""Is a completion a usable query? Bad output is named, never kept: ``empty`` (nothing but spaces or
quotes), ``copy`` (a verbatim stretch of its passage), ``format`` (not one short line: cut off at the
token limit, or echoing the prompt's ``Document:``/``Query:`` labels, or too many words)."""

from __future__ import annotations

import re

from .completion import Completion

_NON_WORD = re.compile(r"[^\w]+")
_LABEL = re.compile(r"^\s*(?:query|question|search query)\s*:\s*", re.IGNORECASE)
BAD_REASONS = ("empty", "copy", "format")


def normalise(text: str) -> str:
    """Case-folded words joined by single spaces (punctuation dropped): the form that decides whether
    two queries are the same and whether a query copies its passage."""
    return " ".join(_NON_WORD.sub(" ", text.casefold()).split())


def clean(text: str) -> str:
    """A completion as a query: its first non-empty line, without a ``Query:`` label or wrapping quotes."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line).strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
        line = line[1:-1].strip()
    return " ".join(line.split())


def bad_output(c: Completion, passage: str, copy_min_words: int = 6, max_words: int = 40) -> str:
    """Why a completion is not a usable query for ``passage``, or ``""`` when it is.

    - ``empty``: no words;
    - ``copy``: the query, normalised, is the whole passage or a verbatim stretch of it of at least
      ``copy_min_words`` words (a short phrase shared with the passage is what queries do);
    - ``format``: cut off at the token limit (``finish == "length"``), a ``Document:`` label in it, or over
      ``max_words`` words."""
    query = clean(c.text)
    words = normalise(query).split()
    if not words:
        return "empty"
    q, p = " ".join(words), normalise(passage)
    if q == p or (len(words) >= copy_min_words and f" {q} " in f" {p} "):
        return "copy"
    if c.finish == "length" or "document:" in query.casefold() or len(words) > max_words:
        return "format"
    return ""

"""Is a completion a usable generated document? Bad output is named, never kept: ``empty`` (nothing
but spaces or quotes), ``copy`` (the query itself, or an example passage of the prompt or a stretch of
one), ``format`` (not one finished paragraph: cut off at the token limit, echoing the prompt's
``Query:`` / ``passage:`` labels, or too short to be a document). The text checked is the one kept:
:func:`hardneg.generation.validation.clean` of the completion."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .completion import Completion
from .validation import clean, normalise

_LABEL = re.compile(r"\b(?:query|passage|document)\s*:|\blevel\s*\d\s+passage\b", re.IGNORECASE)


def bad_document(c: Completion, query: str, examples: Sequence[str] = (), min_words: int = 8) -> str:
    """Why a completion is not a usable document for ``query``, or ``""`` when it is.

    - ``empty``: no words;
    - ``copy``: normalised (case folded, punctuation dropped), the document is the query, or it is, or
      is part of, or holds one of the ``examples`` (the prompt's example passages);
    - ``format``: cut off at the token limit (``finish == "length"``), a prompt label in it
      (``Query:``, ``passage:``, ``Document:``), or fewer than ``min_words`` words.

    Example::

        bad_document(Completion(" Tides follow the moon.", "stop", 40, 6), "what causes tides")  # "format"
    """
    text = clean(c.text)
    words = normalise(text).split()
    if not words:
        return "empty"
    doc = " ".join(words)
    if doc == normalise(query):
        return "copy"
    for ex in examples:
        e = normalise(ex)
        if e and (doc in e or e in doc):
            return "copy"
    if c.finish == "length" or _LABEL.search(text) or len(words) < min_words:
        return "format"
    return ""

"""Text normalisation shared by every component that matches words: the slotter's
vocabulary, the graph arm's attribute nodes, the memory arm's keys, ranker features and
the simulated users' queries. One function, so a value normalised on one side is found
on the other."""

from __future__ import annotations

import re
import unicodedata

WORD = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)


def normalize(text: str) -> str:
    """Casefolded words joined by single spaces, accents and punctuation dropped
    ("Beyoncé", "BEYONCE!" → "beyonce"; "Hip-Hop" → "hip hop")."""
    if text.isascii():           # no accents to drop; casefold is lower: ~4x faster
        return " ".join(WORD.findall(text)).lower()
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(m.group(0).casefold() for m in WORD.finditer(text))

"""Query keys: the normalised key of a query, its near-duplicate key (stopwords out,
tokens sorted), and the name variants an entity is found by."""


from __future__ import annotations

import re

from pydantic import Field, field_validator

from ltrr.components import Params
from ltrr.text import normalize


MAX_KEY_CHARS = 256     # a learned key keeps this much of a normalised query (and lookups)


def query_key(text: str) -> str:
    """The key of a query: ``normalize``d, cut to ``MAX_KEY_CHARS`` so that learned state
    stays bounded whatever clients send (a 20,000-character query is a 256-character key)."""
    return normalize(text)[:MAX_KEY_CHARS].rstrip()


DEFAULT_SEPARATORS = [" feat. ", " feat ", " ft. ", " ft ", " featuring ", " (feat", " (ft",
                      " & ", " and ", " vs. ", " vs ", " x ", " with ", ", ", " + ", " / "]


#: Function words only: a domain's own ("feat", "band"; "movie", "film") go in the spec.
DEFAULT_STOPWORDS = ["the", "a", "an", "and", "of", "by"]


def near_key(key: str, stopwords: frozenset[str]) -> str:
    """The near-duplicate form of a normalised key: tokens minus stopwords, sorted."""
    tokens = key.split()
    kept = [t for t in tokens if t not in stopwords] or tokens
    return " ".join(sorted(kept))


def _separator_regex(separators: list[str]) -> re.Pattern | None:
    seps = [s for s in separators if s]
    return re.compile("|".join(re.escape(s) for s in seps), re.I) if seps else None


class NameSource(Params):
    column: str = Field(description="Catalog column of entity names (string, or a list of "
                                    "aliases).")
    exact: float = Field(1.0, ge=0, le=1, description=(
        "Predicted score of an entity for its exact (normalised) name."))
    variant: float = Field(0.9, ge=0, le=1, description=(
        "Predicted score for a name variant: without a leading article ('beatles' for "
        "'The Beatles'), or compacted ('acdc' for 'AC/DC', 'rem' for 'R.E.M.')."))
    part: float = Field(0.5, ge=0, le=1, description=(
        "Predicted score for the part of the name before a separator ('nick cave' for "
        "'Nick Cave & the Bad Seeds'). 0 disables."))
    popularity_weight: float = Field(1.0, ge=0, le=1, description=(
        "Variant and part scores are multiplied by 1 - popularity_weight + "
        "popularity_weight * popularity, so that 'rock' (a variant of the obscure 'The "
        "Rock') does not outrank the popular entities tagged rock. Exact names are not."))
    separators: list[str] = Field(DEFAULT_SEPARATORS, description=(
        "Separators (case-insensitive, spaces included) after which a name's 'part' ends."))
    articles: list[str] = Field(["the"], description=(
        "Leading words dropped to make a variant (normalised, e.g. 'the')."))
    min_chars: int = Field(3, ge=1, description=(
        "Variants and parts shorter than this (in characters) are not predicted."))

    @field_validator("articles", mode="after")
    @classmethod
    def _normalised(cls, words: list[str]) -> list[str]:
        return [w for w in (normalize(x) for x in words) if w]


def name_keys(raw: str, src: NameSource, sep: re.Pattern | None
              ) -> list[tuple[str, str, float]]:
    """(key, kind, score) pairs a name predicts: exact, variants, the part before a separator."""
    key = normalize(raw)
    if not key:
        return []
    out = [(key, "name", src.exact)]
    articles = set(src.articles)

    def variants(k: str, text: str, score: float, kind: str) -> None:
        toks = k.split()
        if len(toks) > 1 and toks[0] in articles:
            out.append((" ".join(toks[1:]), kind, score))
        compact = " ".join("".join(normalize(w).split()) for w in text.split())
        compact = " ".join(compact.split())
        if compact != k:
            out.append((compact, kind, score))
            ctoks = compact.split()
            if len(ctoks) > 1 and ctoks[0] in articles:
                out.append((" ".join(ctoks[1:]), kind, score))

    variants(key, raw, src.variant, "variant")
    if sep is not None and src.part > 0:
        head = sep.split(raw, 1)[0]
        part = normalize(head)
        if part and part != key:
            out.append((part, "part", src.part))
            variants(part, head, src.part, "part")
    seen: dict[str, tuple[str, str, float]] = {}
    for k, kind, score in out:
        if k == key or len(k) >= src.min_chars:
            if k not in seen or seen[k][2] < score:
                seen[k] = (k, kind, score)
    return list(seen.values())

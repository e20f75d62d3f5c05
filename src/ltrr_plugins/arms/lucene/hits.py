"""Reading Lucene's hits back into Python: TopDocs in one JNI call, the ``Hit`` tuple,
and ``DocBits``, a bitmap of internal document numbers."""


from __future__ import annotations

import logging
import re
from array import array
from typing import NamedTuple


from ltrr_plugins.arms.lucene import jvm

log = logging.getLogger(__name__)


_HIT_RE = re.compile(r"doc=(\d+) score=(\S+) ")
_TOTAL_RE = re.compile(r",(\d+)(\+?) hits$")   # TotalHits.toString(), last in the rendering
_fast_hits: bool | None = None  # None: not checked yet


def _hits_slow(top) -> list[tuple[int, float]]:
    return [(h.doc, h.score) for h in top.scoreDocs]


def _hits_fast(top, k: int | None = None) -> list[tuple[int, float]]:
    """Read all hits with one JNI call: turning ``scoreDocs`` into Python proxies costs
    ~3 us per hit, while commons-lang3 renders the whole TopDocs as one string
    (``doc=12 score=4.994535 shardIndex=-1 ...`` per hit, then ``5 hits``) that a regex
    reads back. Java prints floats round-trippably, so ``array('f')`` restores the exact
    float32. With ``k`` (the search's k), the number of hits read is checked against the
    total the rendering states: a misread raises instead of returning too few hits."""
    java = jvm._java
    text = java.ReflectionToStringBuilder.toString(top, java.ToStringStyle.SIMPLE_STYLE)
    pairs = _HIT_RE.findall(text)
    if k is not None:
        total = _TOTAL_RE.search(text)   # "5 hits", or "1000+ hits" (a lower bound)
        expected = None if total is None else min(k, int(total.group(1)))
        if expected is None or not (len(pairs) == expected or
                                    total.group(2) and expected < len(pairs) <= k):
            raise RuntimeError(f"read {len(pairs)} hits from Lucene's TopDocs rendering, "
                               f"expected {expected} (k={k}): {text[:200]!r}")
    scores = array("f", [float(s) for _, s in pairs]).tolist()
    return [(int(d), s) for (d, _), s in zip(pairs, scores)]


def _hits(top, k: int | None = None) -> list[tuple[int, float]]:
    """``(lucene docid, score)`` of a TopDocs (of a search for ``k`` hits), in order."""
    global _fast_hits
    if _fast_hits is None:
        # Check once that the string rendering reads back exactly (it is Lucene's
        # ScoreDoc.toString format); otherwise stay on the slow, proxy-based path.
        java = jvm._java
        probe = java.TopDocs(java.TotalHits(3, java.TotalHitsRelation.EQUAL_TO),
                             [java.ScoreDoc(7, 1.2345678), java.ScoreDoc(3, 0.1),
                              java.ScoreDoc(11, 3.0e-9)])
        try:
            _fast_hits = _hits_fast(probe) == _hits_slow(probe)
        except Exception:  # noqa: BLE001
            _fast_hits = False
        if not _fast_hits:
            log.warning("fast TopDocs reading failed its self-check; using the slow path")
    return _hits_fast(top, k) if _fast_hits else _hits_slow(top)


class Hit(NamedTuple):
    """A search result: external ``docid``, ``score`` and Lucene's internal ``doc``
    number (valid for the searcher that returned it)."""

    docid: str
    score: float
    doc: int


class DocBits:
    """A set of internal document numbers held as a bitmap: ``doc in bits`` is O(1)."""

    __slots__ = ("_bits", "_count")

    def __init__(self, bits: bytes = b""):
        self._bits = bits
        self._count = int.from_bytes(bits, "little").bit_count()

    def __contains__(self, doc: int) -> bool:
        i = doc >> 3
        return 0 <= i < len(self._bits) and bool(self._bits[i] >> (doc & 7) & 1)

    def __len__(self) -> int:
        return self._count

    def __iter__(self):
        bits = self._bits
        return (i for i in range(len(bits) * 8) if bits[i >> 3] >> (i & 7) & 1)

    @property
    def nbytes(self) -> int:
        return len(self._bits)

    @property
    def bitmap(self) -> bytes:
        """Bit ``doc & 7`` of byte ``doc >> 3`` is set for each document in the set
        (:meth:`FieldedSearcher.phrase_docs` gives ``ceil(maxDoc / 8)`` bytes)."""
        return self._bits



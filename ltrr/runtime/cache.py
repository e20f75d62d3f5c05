"""In-memory LRU caches of slotter and arm results (the spec's ``cache:`` field).

A slotter or arm that does not learn answers the same request the same way until
the pipeline is reloaded, and search traffic repeats itself: the head queries come
back again and again. Its results are kept under a key made of everything the
component receives, so a hit returns exactly what the component would have returned.
The cached lists are shared: components downstream treat slots and candidates as
read-only (none mutates them).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Generic, Hashable, TypeVar

from ltrr.types import ArmRequest, Candidate, Query, Slot

_V = TypeVar("_V")


class LruCache(Generic[_V]):
    """A thread-safe LRU map holding at most ``size`` entries, counting hits and misses."""

    def __init__(self, size: int):
        if size <= 0:
            raise ValueError("an LRU cache needs a positive size")
        self.size = size
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, _V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> _V | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: _V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {"size": self.size, "entries": len(self._data), "hits": self.hits,
                "misses": self.misses, "hit_rate": self.hits / total if total else None}


def query_key(q: Query, personal: bool = True) -> tuple:
    """Everything of a query a component may read, as a hashable key (only the text
    when the component is not ``personal``: it never reads the user or context)."""
    if not personal:
        return (q.text,)
    context = json.dumps(q.context, sort_keys=True, default=str) if q.context else None
    return q.text, q.user_id, context


def _slot_key(s: Slot) -> tuple:
    return s.name, s.value, s.start, s.end, s.score, s.entity_id


def _candidate_key(c: Candidate) -> tuple:
    features = tuple(sorted(c.features.items())) if c.features else None
    return c.entity_id, c.arm, c.rank, c.score, c.seed, features


def arm_key(r: ArmRequest, personal: bool = True) -> tuple:
    """Everything an arm receives for one query, as a hashable key."""
    return (query_key(r.query, personal), r.k, tuple(_slot_key(s) for s in r.slots),
            tuple(_candidate_key(c) for c in r.seeds))

"""In-memory LRU caches of slotter and arm results (the spec's ``cache:`` field).

A slotter or arm that does not learn answers the same request the same way until
the pipeline is reloaded, and search traffic repeats itself: the head queries come
back again and again. Its results are kept under a key made of everything the
component receives, so a hit returns exactly what the component would have returned.
Entries are kept as tuples of plain values, which the cyclic garbage collector stops
tracking: a cache of a million candidates then costs a full collection nothing, while
the same candidates as objects would be scanned at every one (hundreds of milliseconds,
about once a second in a busy server). A hit rebuilds the objects.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Callable, Generic, Hashable, TypeVar

from ltrr.types import ArmRequest, Candidate, Query, Slot

_V = TypeVar("_V")


class LruCache(Generic[_V]):
    """A thread-safe LRU map holding at most ``size`` entries, counting hits and misses.

    ``pack`` turns a value into what is stored and ``unpack`` back (by default the
    value itself is stored)."""

    def __init__(self, size: int, pack: Callable[[_V], Any] | None = None,
                 unpack: Callable[[Any], _V] | None = None):
        if size <= 0:
            raise ValueError("an LRU cache needs a positive size")
        self.size = size
        self._pack, self._unpack = pack, unpack
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
        return value if self._unpack is None else self._unpack(value)

    def put(self, key: Hashable, value: _V) -> None:
        stored = value if self._pack is None else self._pack(value)
        with self._lock:
            self._data[key] = stored
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


def pack_slots(slots: list[Slot]) -> tuple:
    return tuple((s.name, s.value, s.start, s.end, s.score, s.entity_id) for s in slots)


def unpack_slots(packed: tuple) -> list[Slot]:
    return [Slot(*t) for t in packed]


def pack_candidates(cands: list[Candidate]) -> tuple:
    return tuple((c.entity_id, c.arm, c.rank, c.score,
                  None if c.features is None else tuple(c.features.items()), c.seed)
                 for c in cands)


def unpack_candidates(packed: tuple) -> list[Candidate]:
    return [Candidate(e, a, r, s, None if f is None else dict(f), seed)
            for e, a, r, s, f, seed in packed]


def slot_cache(size: int) -> LruCache[list[Slot]]:
    """A cache of a slotter's per-query slot lists."""
    return LruCache(size, pack_slots, unpack_slots)


def candidate_cache(size: int) -> LruCache[list[Candidate]]:
    """A cache of an arm's per-request candidate lists."""
    return LruCache(size, pack_candidates, unpack_candidates)


def cached_call(fn: Callable[[list], list], cache: LruCache | None, key: Callable,
            items: list) -> list:
    """``fn(items)``, computing only the items ``cache`` does not hold (once each, however
    often they repeat in ``items``) and keeping them."""
    if cache is None:
        return fn(items)
    keys = [key(x) for x in items]
    out = [cache.get(k) for k in keys]
    missing: dict = {}
    for i, v in enumerate(out):
        if v is None:
            missing.setdefault(keys[i], i)
    if missing:
        computed = fn([items[i] for i in missing.values()])
        if len(computed) != len(missing):
            return computed          # a broken component: let the caller report it
        found = dict(zip(missing, computed))
        for k, v in found.items():
            cache.put(k, v)
        out = [found[k] if v is None else v for k, v in zip(keys, out)]
    return out

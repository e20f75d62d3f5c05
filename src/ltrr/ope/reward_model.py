"""The reward model of doubly-robust estimation: features of a context and an
allocation, fitted out of fold (ridge, or per-context means)."""


from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ltrr import extras
from ltrr.errors import RunError
from ltrr.types import allocation_of


def allocation_features(key: str) -> dict[str, float]:
    """Features of an allocation for the reward model: each arm's share and presence."""
    try:
        alloc = allocation_of(key)
    except (ValueError, TypeError):
        return {}
    total = sum(alloc.values()) or 1
    out: dict[str, float] = {}
    for arm, k in alloc.items():
        out[f"share:{arm}"] = k / total
        out[f"arm:{arm}"] = 1.0
    return out


def flatten_features(features: Any, prefix: str = "") -> dict[str, float]:
    """Nested feature dicts → flat numeric features.

    Nested keys join with ``.``; strings become one-hot ``key=value``; booleans 0/1;
    list elements one-hot ``key=element``; ``None`` is dropped.
    """
    out: dict[str, float] = {}
    if features is None:
        return out
    if isinstance(features, Mapping):
        for k, v in features.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, Mapping):
                out.update(flatten_features(v, name))
            elif isinstance(v, bool):
                out[name] = float(v)
            elif isinstance(v, (int, float)):
                if math.isfinite(v):
                    out[name] = float(v)
            elif isinstance(v, str):
                out[f"{name}={v}"] = 1.0
            elif isinstance(v, (list, tuple)):
                for e in v:
                    out[f"{name}={e}"] = 1.0
        return out
    if isinstance(features, (list, tuple, np.ndarray)):
        return {f"{prefix or 'x'}{j}": float(v) for j, v in enumerate(features)}
    return {prefix or "x": float(features)}


def _context_key(flat: dict[str, float]) -> str:
    return json.dumps(sorted(flat.items()))


def _pair_features(x: dict[str, float], key: str, af: dict[str, float]) -> dict[str, float]:
    """Context x action features: context, action one-hot, action features, products."""
    out = dict(x)
    out[f"a={key}"] = 1.0
    for name, v in af.items():
        out[name] = v
    for xn, xv in x.items():
        out[f"a={key}*{xn}"] = xv
        for an, av in af.items():
            out[f"{an}*{xn}"] = av * xv
    return out


def _fit_predict(model: str, train: np.ndarray, flat: list[dict[str, float]],
                 logged: Sequence[str], reward: np.ndarray,
                 queries: list[tuple[int, str]], afeat: Mapping[str, dict[str, float]],
                 alpha: float, shrink: float) -> np.ndarray:
    """Fit ``model`` on rows ``train``; predict rewards for (row, action) ``queries``."""
    if model == "ridge":
        extras.require(extras.OPE, "the doubly-robust estimator's ridge reward model",
                       RunError)
        from sklearn.feature_extraction import DictVectorizer
        from sklearn.linear_model import Ridge

        vec = DictVectorizer(sparse=True)
        X = vec.fit_transform([_pair_features(flat[i], logged[i], afeat.get(logged[i], {}))
                               for i in train])
        reg = Ridge(alpha=alpha)
        reg.fit(X, reward[train])
        if not queries:
            return np.zeros(0)
        pred = reg.predict(vec.transform([_pair_features(flat[i], a, afeat.get(a, {}))
                                          for i, a in queries]))
        return np.clip(pred, reward.min(), reward.max())
    # "mean": shrunk per-(context, action) mean → per-action mean → global mean
    glob = float(reward[train].mean())
    by_a: dict[str, list[float]] = {}
    by_ca: dict[tuple[str, str], list[float]] = {}
    ckeys = [_context_key(f) for f in flat]
    for i in train:
        for table, key in ((by_a, logged[i]), (by_ca, (ckeys[i], logged[i]))):
            s = table.setdefault(key, [0.0, 0.0])
            s[0] += reward[i]
            s[1] += 1
    out = np.empty(len(queries))
    for j, (i, a) in enumerate(queries):
        sa = by_a.get(a, (0.0, 0.0))
        prior = (sa[0] + shrink * glob) / (sa[1] + shrink)
        sc = by_ca.get((ckeys[i], a), (0.0, 0.0))
        out[j] = (sc[0] + shrink * prior) / (sc[1] + shrink)
    return out

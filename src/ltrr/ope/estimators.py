"""IPS, SNIPS and DR values of a target policy from logged decisions, with confidence
intervals (normal approximation or bootstrap) and diagnostics."""


from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from ltrr.errors import RunError


from ltrr.ope.reward_model import _fit_predict, flatten_features


ESTIMATORS = ("ips", "snips", "dr")


REWARD_MODELS = ("ridge", "mean")


CI_METHODS = ("bootstrap", "clt")


def _target_matrix(target: Any, n: int, actions: list[str] | None, logged: Sequence[str],
                   contexts: Sequence[Any] | None) -> tuple[np.ndarray, list[str]]:
    """Normalise the target policy into an ``(n, A)`` matrix and its action keys."""
    if isinstance(target, np.ndarray) or (hasattr(target, "shape") and not callable(target)):
        mat = np.asarray(target, dtype=float)
        if actions is None:
            raise RunError("a target probability matrix needs the action keys of its columns",
                           field="actions", hint="pass actions=[key, ...] in column order")
        if mat.shape != (n, len(actions)):
            raise RunError(f"target matrix has shape {mat.shape}, expected {(n, len(actions))}",
                           field="target", hint="one row per logged decision, one column "
                           "per action")
        return mat, list(actions)
    if callable(target):
        space = list(actions) if actions is not None else sorted(set(logged))
        ctx = contexts if contexts is not None else [None] * n
        mat = np.array([np.asarray(target(ctx[i], space), dtype=float) for i in range(n)],
                       dtype=float).reshape(n, len(space))
        return mat, space
    rows = list(target)
    if len(rows) != n:
        raise RunError(f"target has {len(rows)} rows for {n} logged decisions", field="target")
    space = list(actions) if actions is not None else []
    seen = set(space)
    for row in rows:
        for a in row:
            if a not in seen:
                seen.add(a)
                space.append(a)
    for a in logged:
        if a not in seen:
            seen.add(a)
            space.append(a)
    col = {a: j for j, a in enumerate(space)}
    mat = np.zeros((n, len(space)))
    for i, row in enumerate(rows):
        for a, p in row.items():
            mat[i, col[a]] += p
    return mat, space


def _interval(terms_fn: Callable[[np.ndarray], np.ndarray], point: float, se: float, n: int,
              method: str, level: float, resamples: int, stream: np.random.SeedSequence
              ) -> tuple[float, float]:
    """A CLT or bootstrap percentile interval. Every call draws its resamples afresh from
    ``stream``: the same rows for every estimator, whichever others were asked for."""
    if method == "clt":
        z = NormalDist().inv_cdf(0.5 + level / 2)
        return point - z * se, point + z * se
    rng = np.random.default_rng(stream)
    stats = []
    chunk = max(1, min(resamples, 2_000_000 // max(n, 1)))
    done = 0
    while done < resamples:
        m = min(chunk, resamples - done)
        stats.append(terms_fn(rng.integers(0, n, size=(m, n))))
        done += m
    boot = np.concatenate(stats)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def estimate_value(logged_actions: Sequence[str], propensity: Sequence[float],
                   reward: Sequence[float], target: Any, *,
                   actions: Sequence[str] | None = None,
                   contexts: Sequence[Any] | None = None,
                   logging_pmf: np.ndarray | Sequence[Mapping[str, float]] | None = None,
                   action_features: Mapping[str, Mapping[str, float]] | Callable[[str], Mapping[
                       str, float]] | None = None,
                   estimators: Sequence[str] = ESTIMATORS, reward_model: str = "ridge",
                   folds: int = 2, ridge_alpha: float = 1.0, shrink: float = 1.0,
                   clip: float | None = None, ci: str = "bootstrap", level: float = 0.95,
                   resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Estimate the value of a target policy from logged bandit feedback.

    ``logged_actions`` (action keys), ``propensity`` (the logging probability of the
    logged action) and ``reward`` have one entry per decision. ``target`` is the target
    policy: an ``(n, A)`` matrix over ``actions``, a list of ``{action: p}`` per row, or a
    callable ``(context, actions) -> probabilities``. ``contexts`` (feature dicts, nested
    allowed, or numeric vectors) feed the DR reward model; ``action_features`` (per key,
    or a function of the key) let it generalise across actions. ``logging_pmf`` (matrix
    over ``actions`` or ``{action: p}`` rows) is only used to measure the target's mass
    where the logging policy had none.

    Rows whose logged probability is 0, missing or not finite are skipped (counted in
    ``skipped``): a chosen action cannot have had probability 0, so such a row is a
    logging error. ``clip`` caps importance weights (``w = min(w, clip)``).

    Returns a JSON-ready dict: ``n``, ``skipped``, ``logged_value``, ``estimates``
    (per estimator: ``value``, ``low``, ``high``, ``se``), ``diagnostics`` and ``ci``.
    """
    for name in estimators:
        if name not in ESTIMATORS:
            raise RunError(f"unknown estimator '{name}'", field="estimators",
                           hint=f"choose from {', '.join(ESTIMATORS)}")
    if reward_model not in REWARD_MODELS:
        raise RunError(f"unknown reward model '{reward_model}'", field="reward_model",
                       hint=f"choose from {', '.join(REWARD_MODELS)}")
    if ci not in CI_METHODS:
        raise RunError(f"unknown interval method '{ci}'", field="ci",
                       hint=f"choose from {', '.join(CI_METHODS)}")
    if not 0 < level < 1:
        raise RunError(f"confidence level must be in (0, 1), got {level}", field="level")
    if clip is not None and clip <= 0:
        raise RunError(f"clip must be positive, got {clip}", field="clip",
                       hint="a cap on importance weights such as 10, or none")
    if folds < 1:
        raise RunError(f"folds must be at least 1, got {folds}", field="folds")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise RunError(f"seed must be a non-negative integer, got {seed!r}", field="seed")
    logged = [str(a) for a in logged_actions]
    n_all = len(logged)
    prop = np.asarray(propensity, dtype=float).reshape(-1)
    rew = np.asarray(reward, dtype=float).reshape(-1)
    if n_all == 0:
        raise RunError("the log holds no decisions to evaluate",
                       hint="serve some queries with the logging policy first (ltrr run "
                       "without --no-log), or point at the right log")
    if len(prop) != n_all or len(rew) != n_all:
        raise RunError(f"{n_all} actions, {len(prop)} probabilities and {len(rew)} rewards: "
                       "one of each per decision is needed")
    if np.any(prop > 1 + 1e-9):
        i = int(np.argmax(prop))
        raise RunError(f"logged probability {prop[i]} (row {i}) is above 1",
                       field="probability", hint="the log is corrupt or not a probability")
    if not np.all(np.isfinite(rew)):
        raise RunError("rewards must be finite numbers", field="reward",
                       hint="fill missing rewards (e.g. with 0) before evaluating")

    target_mat, space = _target_matrix(target, n_all, list(actions) if actions is not None
                                       else None, logged, contexts)
    if np.any(target_mat < -1e-12) or not np.all(np.isfinite(target_mat)):
        raise RunError("target probabilities must be finite and non-negative", field="target")
    sums = target_mat.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > 1e-6)
    if bad.size:
        raise RunError(f"target probabilities of row {int(bad[0])} sum to {sums[bad[0]]:.6g}, "
                       "not 1", field="target", hint="the target pmf must cover its actions: "
                       "include every action it can play in the action space")
    col = {a: j for j, a in enumerate(space)}
    missing = sorted({a for a in logged if a not in col})
    if missing:
        raise RunError(f"logged action {missing[0]} is not in the action space",
                       field="actions", hint="the action space must include every logged "
                       "action")

    keep = np.flatnonzero(np.isfinite(prop) & (prop > 0))
    skipped = n_all - keep.size
    if keep.size == 0:
        raise RunError(f"all {n_all} logged decisions have probability 0 or none",
                       field="probability", hint="the logging policy must log the "
                       "probability of the action it chose")
    logged = [logged[i] for i in keep]
    prop, rew, target_mat = prop[keep], rew[keep], target_mat[keep]
    ctx = [contexts[i] for i in keep] if contexts is not None else [None] * keep.size
    n = keep.size
    a_idx = np.array([col[a] for a in logged])
    pi_logged = target_mat[np.arange(n), a_idx]
    raw_w = pi_logged / prop
    w = np.minimum(raw_w, clip) if clip is not None else raw_w
    clipped = int(np.sum(raw_w > w))

    # support: where the logging policy had no probability (read from the logged pmfs, or,
    # without them, the actions never logged) the target's mass is unsupported
    if logging_pmf is not None:
        if isinstance(logging_pmf, np.ndarray):
            mu = np.asarray(logging_pmf, dtype=float)[keep]
        else:
            rows = [logging_pmf[i] for i in keep]
            mu = np.zeros_like(target_mat)
            for i, row in enumerate(rows):
                for a, p in row.items():
                    if a in col:
                        mu[i, col[a]] += p
        unsupported_at = mu <= 0
    else:
        seen = set(logged)
        unsupported_at = np.tile([a not in seen for a in space], (n, 1))
    unsupported = float(np.mean(np.sum(target_mat * unsupported_at, axis=1)))
    supported = unsupported <= 1e-9

    # one independent stream per purpose: a figure never depends on what else was drawn
    fold_stream, boot_stream = np.random.SeedSequence(int(seed)).spawn(2)
    results: dict[str, dict[str, Any]] = {}

    def add(name: str, point: float, se: float, boot: Callable[[np.ndarray], np.ndarray]):
        lo, hi = _interval(boot, point, se, n, ci, level, resamples, boot_stream)
        results[name] = {"value": point, "low": lo, "high": hi, "se": se,
                         "reliable": supported}

    if "ips" in estimators:
        t = w * rew
        add("ips", float(t.mean()), float(t.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
            lambda idx, t=t: t[idx].mean(axis=1))
    if "snips" in estimators:
        sw = w.sum()
        if sw <= 0:
            results["snips"] = {"value": float("nan"), "low": float("nan"),
                                "high": float("nan"), "se": float("nan"), "reliable": False}
        else:
            v = float((w * rew).sum() / sw)
            psi = w * (rew - v) / w.mean()
            se = float(psi.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0

            def boot_snips(idx, w=w, wr=w * rew):
                den = w[idx].sum(axis=1)
                return np.where(den > 0, wr[idx].sum(axis=1) / np.where(den > 0, den, 1), 0.0)
            add("snips", v, se, boot_snips)
    model_info: dict[str, Any] = {}
    if "dr" in estimators:
        if callable(action_features):
            afeat = {a: dict(action_features(a)) for a in space}
        else:
            afeat = {a: dict((action_features or {}).get(a, {})) for a in space}
        flat = [flatten_features(c) for c in ctx]
        k = min(folds, n) if n >= 2 else 1
        fold = (np.random.default_rng(fold_stream).permutation(n) % k if k > 1
                else np.zeros(n, dtype=int))
        direct = np.zeros(n)
        direct_unsupported = np.zeros(n)     # the part of ``direct`` on never-logged actions
        q_logged = np.zeros(n)
        for f in range(k):
            test = np.flatnonzero(fold == f)
            train = np.flatnonzero(fold != f) if k > 1 else test
            queries = []
            for i in test:
                for j in np.flatnonzero(target_mat[i] > 0):
                    queries.append((int(i), space[j]))
                queries.append((int(i), logged[i]))
            pred = _fit_predict(reward_model, train, flat, logged, rew, queries, afeat,
                                ridge_alpha, shrink)
            pos = 0
            for i in test:
                js = np.flatnonzero(target_mat[i] > 0)
                valued = target_mat[i, js] * pred[pos:pos + js.size]
                direct[i] = float(valued.sum())
                direct_unsupported[i] = float(valued[unsupported_at[i, js]].sum())
                q_logged[i] = pred[pos + js.size]
                pos += js.size + 1
        t = direct + w * (rew - q_logged)
        add("dr", float(t.mean()), float(t.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
            lambda idx, t=t: t[idx].mean(axis=1))
        model_info = {"reward_model": reward_model, "folds": k,
                      "direct_method": float(direct.mean()),
                      "direct_method_unsupported": float(direct_unsupported.mean()),
                      "model_rmse_logged": float(np.sqrt(np.mean((rew - q_logged) ** 2)))}

    sum_w, sum_w2 = float(w.sum()), float((w ** 2).sum())
    return {
        "n": int(n), "skipped": int(skipped), "actions": len(space),
        "logged_value": float(rew.mean()),
        "estimates": results,
        "warnings": [] if supported else [_unsupported_warning(unsupported, rew)],
        "diagnostics": {
            "ess": sum_w ** 2 / sum_w2 if sum_w2 > 0 else 0.0,
            "max_weight": float(raw_w.max()), "mean_weight": float(w.mean()),
            "clip": clip, "clipped": clipped, "unsupported_mass": unsupported, **model_info},
        "ci": {"method": ci, "level": level,
               **({"resamples": resamples, "seed": seed} if ci == "bootstrap" else {})},
    }


def _unsupported_warning(mass: float, reward: np.ndarray) -> str:
    """What the estimators made of the target's mass on actions the logger never played."""
    if mass >= 1 - 1e-9:
        return ("no support: the candidate puts all its mass on actions the logging policy "
                "never played (unsupported mass 1.000), so the log measures nothing about it: "
                "IPS is 0 and SNIPS undefined by construction, and DR is its reward model's "
                "guess alone; log with a policy that explores the candidate's actions")
    low, high = mass * float(reward.min()), mass * float(reward.max())
    return (f"the candidate puts {mass:.3f} of its mass (mean per decision) on actions the "
            f"logging policy never played: IPS counts that mass as reward 0 (if those "
            f"actions earn rewards in the logged range, the truth is IPS + {low:.3g} to "
            f"IPS + {high:.3g}), SNIPS credits it with the average of the rest, DR values it "
            "with its reward model (not measured: its interval leaves out the model's error)")

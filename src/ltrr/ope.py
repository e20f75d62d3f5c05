"""Off-policy evaluation: what would a candidate policy have earned on logged decisions?

Every logged decision ``i`` has a context ``x_i``, the action ``a_i`` the logging policy
chose with probability ``p_i = mu(a_i | x_i)`` and the reward ``r_i`` it earned. Given the
candidate (target) policy's probabilities ``pi(a | x_i)`` over the action space, with
importance weights ``w_i = pi(a_i | x_i) / p_i`` (capped at ``clip`` when set):

- IPS    ``V = 1/n sum_i w_i r_i`` (unbiased when every action the target plays was
  possible under the logging policy; mass the target puts on never-logged actions counts
  as reward 0, so IPS under-estimates then),
- SNIPS  ``V = sum_i w_i r_i / sum_i w_i`` (self-normalised: a little bias, less variance;
  it credits never-logged mass with the average of the logged part),
- DR     ``V = 1/n sum_i [ sum_a pi(a|x_i) q(x_i,a) + w_i (r_i - q(x_i,a_i)) ]`` with a
  reward model ``q`` (ridge regression on context x action features, or a shrunk
  per-(context, action) mean), cross-fitted over ``folds`` so a row's own reward never
  fits the model that corrects it. The model also values actions that were never logged.

``pi`` is always the target's own probability under its whole pmf, never renormalised over
the logged actions. The target's mass on actions the logging policy could not play is
reported (``unsupported_mass``); when it is above 0 every estimate is flagged
``reliable: false`` and ``warnings`` says how each estimator treated that mass.

Confidence intervals are bootstrap percentile intervals by default (rows resampled; the
reward model is not refitted per resample) or normal (CLT) intervals (``ci="clt"``; SNIPS
by the delta method). Randomness comes from ``seed`` through independent streams
(``numpy.random.SeedSequence(seed).spawn``): one draws DR's cross-fitting folds, one the
bootstrap resamples (the same resamples for every estimator), so each figure is a function
of the data and the seed only, whatever else was asked for. Diagnostics: effective sample
size ``(sum w)^2 / sum w^2``, the largest weight, the mean weight (≈ 1 when the target's
support is covered), the number of clipped weights, and the unsupported mass.

:func:`estimate_value` works on plain arrays; :func:`evaluate_log` on ltrr's decision log
and a rewards frame; :func:`ope_report` reads a state folder (decisions + events);
:func:`ltrr.cli.output.print_ope_table` shows a report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ltrr import extras
from ltrr.errors import RunError, StateError
from ltrr.spec import DECISIONS_DIR, EVENTS_DIR
from ltrr.types import action_key, allocation_of

if TYPE_CHECKING:
    import polars as pl

    from ltrr.compiler import Plan

ESTIMATORS = ("ips", "snips", "dr")
REWARD_MODELS = ("ridge", "mean")
CI_METHODS = ("bootstrap", "clt")


# --- protocols the evaluated policy may implement -------------------------------------------

@runtime_checkable
class LoggedPmfPolicy(Protocol):
    """A policy that can score any logged context (the features it logged) for OPE."""

    def pmf_logged(self, features: dict, actions: list[dict[str, int]]) -> list[float]:
        """Probabilities of ``actions`` (allocations, in order) given logged ``features``
        (the decision's ``action_features``, ``{}`` when none were logged), as the policy
        would play them: its true probabilities, never renormalised over ``actions``.
        ``actions`` holds every allocation of the logged pmfs and of
        :meth:`PlayableActionsPolicy.playable_actions` when the policy has it, so the
        probabilities must sum to 1; put 0 on actions the policy cannot play."""
        ...


@runtime_checkable
class PlayableActionsPolicy(Protocol):
    """A :class:`LoggedPmfPolicy` that can list its actions (learning policies do).

    OPE adds them to the action space, so the policy's mass on allocations the logger
    never played is counted (``unsupported_mass``) and valued by DR's reward model
    instead of being lost.
    """

    def playable_actions(self) -> list[dict[str, int]]:
        """Every allocation the policy can play, in any context."""
        ...


@runtime_checkable
class RewardingPolicy(Protocol):
    """A policy that defines the reward it learns from (used by :func:`ope_report`)."""

    def rewards(self, interactions: "pl.DataFrame") -> "pl.DataFrame":
        """One row per decision: columns ``request_id`` and ``reward``."""
        ...


# --- action keys (ltrr.types.action_key) ------------------------------------------------

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


# --- features --------------------------------------------------------------------------------

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


# --- reward models ---------------------------------------------------------------------------

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


# --- the estimators --------------------------------------------------------------------------

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


# --- ltrr's logs -----------------------------------------------------------------------------

def _loads(text: str | None, default: Any) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _target_from_policy(policy: Any, decisions: "pl.DataFrame", features: list[dict],
                        space: list[str], node: str | None) -> tuple[list[dict[str, float]], str]:
    """The candidate policy's pmf per logged decision, as ``{action key: p}`` rows.

    A :class:`PlayableActionsPolicy`'s actions are appended to ``space`` first, so
    ``pmf_logged`` is asked about its whole pmf, never-logged allocations included."""
    if isinstance(policy, LoggedPmfPolicy):
        if isinstance(policy, PlayableActionsPolicy):
            known = set(space)
            for alloc in policy.playable_actions():
                key = action_key(alloc)
                if key not in known:
                    known.add(key)
                    space.append(key)
        allocs = [allocation_of(a) for a in space]
        ids = decisions["request_id"].to_list()
        rows = []
        for i, f in enumerate(features):
            probs = np.asarray(policy.pmf_logged(f, allocs), dtype=float).reshape(-1)
            where = f"decision {i} (request {ids[i]!r})"
            if probs.size != len(space):
                raise RunError(f"pmf_logged returned {probs.size} probabilities for "
                               f"{len(space)} actions ({where})", node=node,
                               hint="return one probability per action, in order")
            if not np.all(np.isfinite(probs)) or np.any(probs < 0):
                raise RunError(f"pmf_logged returned a negative or non-finite probability "
                               f"({where})", node=node, field="pmf_logged")
            total = float(probs.sum())
            if abs(total - 1) > 1e-6:
                raise RunError(
                    f"pmf_logged gives {where} a total probability of {total:.6g} over the "
                    f"{len(space)} actions OPE knows", node=node, field="pmf_logged",
                    hint="return the policy's true probabilities, and list every allocation "
                    "it can play in playable_actions() (ltrr.ope.PlayableActionsPolicy) so "
                    "its mass on never-logged allocations is counted")
            rows.append({a: float(p) for a, p in zip(space, probs) if p})
        return rows, "pmf_logged"
    choose = getattr(policy, "choose_batch", None)
    if choose is None:
        raise RunError("the policy to evaluate has neither pmf_logged() nor choose_batch()",
                       node=node, hint="implement ltrr.ope.LoggedPmfPolicy.pmf_logged")
    from ltrr.types import PolicyContext, Query, Slot

    needed = {"request_id", "query", "user_id", "context", "slots"}
    if not needed <= set(decisions.columns):
        raise RunError("the decisions lack the columns to rebuild the policy's contexts: "
                       + ", ".join(sorted(needed - set(decisions.columns))), node=node,
                       hint="pass whole decision-log rows, or give the policy pmf_logged()")
    contexts = [PolicyContext(Query(r["request_id"], r["query"] or "", r["user_id"],
                                    _loads(r["context"], {}) or {}),
                              [Slot(**s) for s in (r["slots"] or [])])
                for r in decisions.select(sorted(needed)).iter_rows(named=True)]
    rows = []
    for start in range(0, len(contexts), 1024):
        for action in choose(contexts[start:start + 1024]):
            pmf = action.pmf or [(action.allocation, 1.0)]
            row: dict[str, float] = {}
            for alloc, p in pmf:
                key = action_key(alloc)
                row[key] = row.get(key, 0.0) + float(p)
            rows.append(row)
    return rows, "choose_batch"


def evaluate_log(plan: "Plan | None", candidate_policy: Any, decisions: "pl.DataFrame",
                 rewards: "pl.DataFrame", *, missing_reward: float | None = 0.0,
                 **options: Any) -> dict[str, Any]:
    """OPE of ``candidate_policy`` on logged ``decisions`` with per-request ``rewards``.

    ``decisions`` are decision-log rows (``request_id``, ``allocation``, ``probability``,
    ``pmf``, ``action_features``; plus ``query``/``user_id``/``context``/``slots`` for
    policies without ``pmf_logged``). ``rewards`` has ``request_id`` and ``reward``; a
    decision without a reward row gets ``missing_reward`` (``None``: dropped). The action
    space is every allocation in the logged pmfs plus any the candidate plays
    (:class:`PlayableActionsPolicy`, or the pmfs ``choose_batch`` returns). The
    candidate's probabilities come from ``pmf_logged(features, actions)``
    (:class:`LoggedPmfPolicy`) when it has one, else from ``choose_batch`` on contexts
    rebuilt from the log. ``options`` go to :func:`estimate_value`.
    """
    import polars as pl

    node = plan.policy.id if plan is not None else getattr(
        getattr(candidate_policy, "ctx", None), "node_id", None)
    if decisions.height == 0:
        raise RunError("the decision log is empty: nothing to evaluate", node=node,
                       hint="serve queries with the logging policy first (ltrr run, "
                       "without --no-log)")
    for c in ("request_id", "allocation", "probability"):
        if c not in decisions.columns:
            raise RunError(f"decisions lack the column '{c}'", field=c,
                           hint="pass rows of the decision log")
    if not {"request_id", "reward"} <= set(rewards.columns):
        raise RunError("rewards need the columns request_id and reward", field="rewards")
    rewards = (rewards.select(pl.col("request_id").cast(pl.String),
                              pl.col("reward").cast(pl.Float64))
               .group_by("request_id").agg(pl.col("reward").max()))
    decisions = decisions.join(rewards.rename({"reward": "_reward"}), on="request_id",
                               how="left")
    no_reward = int(decisions["_reward"].null_count())
    if missing_reward is None:
        decisions = decisions.filter(pl.col("_reward").is_not_null())
        if decisions.height == 0:
            raise RunError("no logged decision has a reward", field="rewards",
                           hint="ingest feedback for the logged requests (ltrr feedback)")
    else:
        decisions = decisions.with_columns(pl.col("_reward").fill_null(missing_reward))

    logged, logging_pmf, features = [], [], []
    space: list[str] = []
    seen: set[str] = set()
    has_pmf = "pmf" in decisions.columns
    has_feat = "action_features" in decisions.columns
    for r in decisions.iter_rows(named=True):
        alloc = {s["arm"]: s["k"] for s in (r["allocation"] or [])} \
            if isinstance(r["allocation"], list) else dict(r["allocation"] or {})
        key = action_key(alloc)
        logged.append(key)
        pmf_row: dict[str, float] = {}
        for pair in (_loads(r["pmf"], []) if has_pmf else []) or []:
            k = action_key(pair[0])
            pmf_row[k] = pmf_row.get(k, 0.0) + float(pair[1])
        if not pmf_row:
            pmf_row = {key: float(r["probability"] or 0.0)}
        logging_pmf.append(pmf_row)
        for k in (key, *pmf_row):
            if k not in seen:
                seen.add(k)
                space.append(k)
        feat = _loads(r["action_features"], {}) if has_feat else {}
        features.append(feat if isinstance(feat, dict) else {})

    target, source = _target_from_policy(candidate_policy, decisions, features, space, node)
    report = estimate_value(logged, decisions["probability"].to_list(),
                            decisions["_reward"].to_list(), target, actions=space,
                            contexts=features, logging_pmf=logging_pmf,
                            action_features=allocation_features, **options)
    report.update({
        "policy": getattr(candidate_policy, "name", type(candidate_policy).__name__),
        "node": node, "target_pmf": source, "decisions": decisions.height,
        "without_reward": no_reward, "missing_reward": missing_reward,
    })
    return report


def default_rewards(interactions: "pl.DataFrame", decisions: "pl.DataFrame") -> "pl.DataFrame":
    """Reward per decision when the policy defines none: max over its events of
    ``weight * [entity in the candidate set]``; 0 for decisions without events."""
    import polars as pl

    per = (interactions.filter(pl.col("request_id").is_not_null())
           .group_by("request_id")
           .agg((pl.col("weight").fill_null(0.0)
                 * pl.col("in_candidates").cast(pl.Float64)).max().alias("reward")))
    return (decisions.select("request_id").unique()
            .join(per, on="request_id", how="left")
            .with_columns(pl.col("reward").fill_null(0.0)))


def ope_report(plan: "Plan", log_dir: Path, policy_component: Any, *,
               rewards: "pl.DataFrame | None" = None, **options: Any) -> dict[str, Any]:
    """OPE of ``policy_component`` on the decisions and events logged under ``log_dir``.

    ``log_dir`` is a pipeline state folder (with ``decisions/`` and ``events/``) or a
    decisions folder itself. Rewards: ``rewards`` when given, else the policy's own
    ``rewards(interactions)`` (:class:`RewardingPolicy`), else :func:`default_rewards`
    with the spec's feedback weights. ``options`` go to :func:`evaluate_log`.
    """
    from ltrr.feedback.events import EventLog
    from ltrr.feedback.interactions import interactions
    from ltrr.runtime.decision_log import DecisionLog

    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise StateError(f"log folder {log_dir} does not exist", field="--log",
                         hint="pass the pipeline's state folder (the one holding decisions/)")
    dec_dir = log_dir / DECISIONS_DIR if (log_dir / DECISIONS_DIR).is_dir() else log_dir
    dlog = DecisionLog(dec_dir)
    if not dlog.parts():
        raise StateError(f"no decision log under {log_dir}", field="--log",
                         hint="expected decisions/part-*.parquet: serve queries first "
                         "(ltrr run without --no-log), or point at the right folder")
    try:
        decisions = dlog.read()
    except Exception as exc:   # unreadable or foreign parquet parts
        raise StateError(f"cannot read the decision log under {dec_dir}: {exc}",
                         field="--log") from exc
    source = "given"
    if rewards is None:
        events = EventLog(log_dir / EVENTS_DIR).read()
        weights = plan.model.feedback.weights
        joined = interactions(events, decisions, weights)
        if isinstance(policy_component, RewardingPolicy):
            rewards, source = policy_component.rewards(joined), "policy"
        else:
            rewards, source = default_rewards(joined, decisions), "feedback weights"
    report = evaluate_log(plan, policy_component, decisions, rewards, **options)
    report.update({"log": str(log_dir), "rewards_from": source})
    return report

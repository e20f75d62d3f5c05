"""Off-policy evaluation on synthetic logs whose true values are known (fixed seeds)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from rich.console import Console

from ltrr.compiler import compile_spec
from ltrr.components import Arm
from ltrr.errors import RunError, StateError
from ltrr.feedback.events import EVENT_SCHEMA, EventLog
from ltrr.hookspecs import hookimpl
from ltrr.cli.output import print_ope_table
from ltrr.ope import allocation_features, estimate_value, evaluate_log, ope_report
from ltrr.registry import build_registry
from ltrr.types import action_key
from ltrr.runtime.decision_log import DecisionLog
from ltrr.runtime.workspace import Workspace
from ltrr.spec import load_spec_text
from ltrr.types import Action, Candidate, Decision, Query, Ranked

C, A = 4, 5                                   # context types, actions
ACTIONS = [f"a{j}" for j in range(A)]
Q = np.random.default_rng(1).uniform(0.1, 0.9, size=(C, A))   # true mean reward q(x, a)
EPS = 0.1
TARGET = np.full((C, A), EPS / A)             # epsilon-greedy on the best action per context
TARGET[np.arange(C), Q.argmax(1)] += 1 - EPS
SEED = 0
TRUTH = float(np.mean((TARGET * Q).sum(1)))   # contexts are uniform: exact value


def synthetic(n: int, seed: int, logging: np.ndarray | None = None):
    """Uniform contexts, logging pmf per context (default uniform), Bernoulli rewards."""
    rng = np.random.default_rng(seed)
    mu = np.full((C, A), 1 / A) if logging is None else logging
    x = rng.integers(0, C, n)
    a = np.array([rng.choice(A, p=mu[c]) for c in x])
    r = (rng.random(n) < Q[x, a]).astype(float)
    return SimpleNamespace(x=x, a=a, r=r, p=mu[x, a], mu=mu,
                           logged=[ACTIONS[j] for j in a],
                           contexts=[{"type": f"t{c}"} for c in x])


def run(log, target, **kw):
    return estimate_value(log.logged, log.p, log.r, target, actions=ACTIONS,
                          contexts=log.contexts, **kw)


@pytest.mark.parametrize("reward_model", ["ridge", "mean"])
@pytest.mark.parametrize("ci", ["bootstrap", "clt"])
def test_estimates_are_close_to_the_true_value_and_the_intervals_cover_it(reward_model, ci):
    log = synthetic(5000, seed=SEED)
    rep = run(log, TARGET[log.x], reward_model=reward_model, ci=ci)
    assert set(rep["estimates"]) == {"ips", "snips", "dr"}
    for name, e in rep["estimates"].items():
        assert abs(e["value"] - TRUTH) < min(3 * e["se"], 0.07), (name, e, TRUTH)
        assert e["low"] <= TRUTH <= e["high"], (name, e, TRUTH)
        assert e["high"] - e["low"] < 0.1
    d = rep["diagnostics"]
    assert d["max_weight"] == pytest.approx((1 - EPS + EPS / A) * A)
    assert 0 < d["ess"] < 5000 and d["unsupported_mass"] == 0


def test_interval_coverage_over_replicated_logs():
    hits = {"ips": 0, "snips": 0, "dr": 0}
    for seed in range(60):
        log = synthetic(1000, seed=1000 + seed)
        rep = run(log, TARGET[log.x], ci="clt", reward_model="mean")
        for name, e in rep["estimates"].items():
            hits[name] += e["low"] <= TRUTH <= e["high"]
    assert all(h >= 52 for h in hits.values()), hits      # nominal 95%: 57 of 60


def test_epsilon_greedy_logging_and_a_callable_target():
    greedy = np.full((C, A), 0.3 / A)
    greedy[:, 0] += 0.7                       # the logger favours a0 everywhere
    log = synthetic(6000, seed=3, logging=greedy)

    def target(ctx, actions):                 # (context, actions) -> probabilities
        return TARGET[int(ctx["type"][1:])]

    rep = run(log, target)
    for e in rep["estimates"].values():
        assert e["low"] <= TRUTH <= e["high"]
    assert rep["diagnostics"]["max_weight"] == pytest.approx((1 - EPS + EPS / A) / (0.3 / A))


def test_dr_has_lower_variance_than_ips_when_the_reward_model_is_good():
    ips, dr = [], []
    for seed in range(40):
        log = synthetic(1000, seed=100 + seed)
        rep = run(log, TARGET[log.x], ci="clt")
        ips.append(rep["estimates"]["ips"]["value"])
        dr.append(rep["estimates"]["dr"]["value"])
    assert np.std(dr) < 0.75 * np.std(ips)
    assert abs(np.mean(dr) - TRUTH) < 0.01 and abs(np.mean(ips) - TRUTH) < 0.015


def test_snips_equals_ips_when_the_weights_average_to_one():
    # every (context, action) pair logged exactly once under a uniform logger: for any
    # target the weights of one context sum to A, so they average to 1
    x = np.repeat(np.arange(C), A)
    a = np.tile(np.arange(A), C)
    r = Q[x, a]
    rep = estimate_value([ACTIONS[j] for j in a], np.full(C * A, 1 / A), r, TARGET[x],
                         actions=ACTIONS, estimators=["ips", "snips"])
    assert rep["diagnostics"]["mean_weight"] == pytest.approx(1.0)
    assert rep["estimates"]["snips"]["value"] == pytest.approx(rep["estimates"]["ips"]["value"])
    assert rep["estimates"]["ips"]["value"] == pytest.approx(TRUTH)   # exact here


def test_a_target_equal_to_the_logger_gets_the_logged_average():
    greedy = np.full((C, A), 0.5 / A)
    greedy[:, 2] += 0.5
    log = synthetic(3000, seed=11, logging=greedy)
    rep = run(log, greedy[log.x])
    mean = log.r.mean()
    assert rep["logged_value"] == pytest.approx(mean)
    assert rep["estimates"]["ips"]["value"] == pytest.approx(mean)
    assert rep["estimates"]["snips"]["value"] == pytest.approx(mean)
    assert rep["estimates"]["dr"]["value"] == pytest.approx(mean, abs=0.01)
    assert rep["diagnostics"]["ess"] == pytest.approx(3000)


def test_dr_values_an_action_that_was_never_logged_and_ips_ignores_it():
    # actions are allocations of 100 candidates over arms lex/mem; reward linear in mem's
    # share with a context-dependent slope; the target plays 75/25, which was never logged
    logged_allocs = [{"lex": 100}, {"lex": 50, "mem": 50}, {"mem": 100}]
    keys = [action_key(al) for al in logged_allocs]
    new = action_key({"lex": 75, "mem": 25})
    base, slope = np.array([0.2, 0.5, 0.3, 0.6]), np.array([0.6, -0.4, 0.2, 0.1])

    def q(c, alloc):
        return base[c] + slope[c] * alloc.get("mem", 0) / 100

    rng = np.random.default_rng(5)
    n = 4000
    x = rng.integers(0, C, n)
    a = rng.integers(0, 3, n)
    r = np.array([q(c, logged_allocs[j]) for c, j in zip(x, a)]) + rng.normal(0, 0.05, n)
    target = [{new: 1.0}] * n
    truth = float(np.mean([q(c, {"lex": 75, "mem": 25}) for c in range(C)]))
    rep = estimate_value([keys[j] for j in a], np.full(n, 1 / 3), r, target,
                         actions=keys, contexts=[{"type": f"t{c}"} for c in x],
                         logging_pmf=[{k: 1 / 3 for k in keys}] * n,
                         action_features=allocation_features)
    # no logged row matches: IPS and SNIPS measure nothing, and the report says so
    assert rep["diagnostics"]["unsupported_mass"] == 1.0
    assert [e["reliable"] for e in rep["estimates"].values()] == [False, False, False]
    assert any("no support" in w for w in rep["warnings"]), rep["warnings"]
    assert rep["estimates"]["ips"]["value"] == 0.0
    dr = rep["estimates"]["dr"]
    # the model interpolates between logged allocations: close, not exact; its interval
    # covers sampling noise only, not the model's extrapolation error
    assert abs(dr["value"] - truth) < 0.04


def q_mean_model(contexts, logged, reward, shrink=1.0):
    """The ``mean`` reward model fitted on every row (folds=1), written out by hand:
    per-(context, action) mean shrunk towards the action's mean, itself shrunk towards
    the global mean; an action never logged gets the global mean."""
    glob = float(np.mean(reward))

    def q(c, a):
        ra = [r for a2, r in zip(logged, reward) if a2 == a]
        prior = (sum(ra) + shrink * glob) / (len(ra) + shrink)
        rca = [r for c2, a2, r in zip(contexts, logged, reward) if (c2, a2) == (c, a)]
        return (sum(rca) + shrink * prior) / (len(rca) + shrink)
    return q


def by_hand(logged, prop, reward, target, logging, contexts):
    """IPS, SNIPS, DR (mean model, one fold) and the unsupported mass from first
    principles: ``target``/``logging`` are ``{action: p}`` per row (full pmfs)."""
    logged, prop, reward = list(logged), np.asarray(prop), np.asarray(reward, dtype=float)
    w = np.array([t.get(a, 0.0) for t, a in zip(target, logged)]) / prop
    q = q_mean_model(contexts, logged, reward)
    dr = [sum(p * q(c, a) for a, p in t.items()) + wi * (r - q(c, a_i))
          for t, c, a_i, wi, r in zip(target, contexts, logged, w, reward)]
    unsupported = [sum(p for a, p in t.items() if mu.get(a, 0.0) <= 0)
                   for t, mu in zip(target, logging)]
    return {"ips": float(np.mean(w * reward)), "snips": float((w * reward).sum() / w.sum()),
            "dr": float(np.mean(dr)), "unsupported_mass": float(np.mean(unsupported))}


def test_unsupported_mass_is_reported_ips_keeps_true_probabilities_and_dr_models_it():
    # a hand-sized log: the logger plays a or b (never c); the target puts mass on c
    logged = ["a", "b", "a", "b", "a", "a", "b", "b"]
    prop = [0.5, 0.5, 0.8, 0.2, 0.8, 0.5, 0.2, 0.5]
    reward = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    contexts = ["x", "x", "y", "y", "y", "x", "y", "x"]
    logging = [{"a": 0.5, "b": 0.5} if c == "x" else {"a": 0.8, "b": 0.2} for c in contexts]
    target = [{"a": 0.3, "b": 0.3, "c": 0.4} if c == "x" else {"a": 0.6, "c": 0.4}
              for c in contexts]
    want = by_hand(logged, prop, reward, target, logging, contexts)
    assert want["unsupported_mass"] == pytest.approx(0.4)
    rep = estimate_value(logged, prop, reward, target, actions=["a", "b", "c"],
                         contexts=[{"type": c} for c in contexts], logging_pmf=logging,
                         reward_model="mean", folds=1, ci="clt")
    assert rep["diagnostics"]["unsupported_mass"] == pytest.approx(want["unsupported_mass"])
    for name in ("ips", "snips", "dr"):
        assert rep["estimates"][name]["value"] == pytest.approx(want[name]), name
        assert rep["estimates"][name]["reliable"] is False, name
    # rewards 0..1: the truth is IPS plus 0 to 0.4 if c earns rewards in the logged range
    assert any("0.400" in w and "never" in w and "IPS + 0 to IPS + 0.4" in w
               for w in rep["warnings"]), rep["warnings"]
    # the same target without c (its mass moved to a): fully supported, nothing flagged
    covered = [{"a": 0.7, "b": 0.3} if c == "x" else {"a": 1.0} for c in contexts]
    rep = estimate_value(logged, prop, reward, covered, actions=["a", "b", "c"],
                         contexts=[{"type": c} for c in contexts], logging_pmf=logging,
                         reward_model="mean", folds=1, ci="clt")
    assert rep["diagnostics"]["unsupported_mass"] == 0.0 and rep["warnings"] == []
    assert all(e["reliable"] for e in rep["estimates"].values())


def test_dr_point_estimate_depends_on_the_data_and_the_seed_only():
    log = synthetic(1500, seed=7)
    values, ips_intervals = set(), set()
    for ci in ("bootstrap", "clt"):
        for estimators in (["dr"], ["ips", "snips", "dr"], ["dr", "ips"], ["snips", "dr"]):
            rep = run(log, TARGET[log.x], ci=ci, estimators=estimators, seed=5,
                      resamples=200)
            values.add(rep["estimates"]["dr"]["value"])
            if ci == "bootstrap" and "ips" in estimators:
                ips = rep["estimates"]["ips"]
                ips_intervals.add((ips["low"], ips["high"]))
    assert len(values) == 1, values
    assert len(ips_intervals) == 1, ips_intervals     # each interval: the seed's resamples
    other = run(log, TARGET[log.x], estimators=["dr"], ci="clt", seed=6)
    assert other["estimates"]["dr"]["value"] != values.pop()   # the folds follow the seed


def test_zero_probabilities_are_skipped_and_clip_caps_the_weights():
    log = synthetic(2000, seed=2)
    p = log.p.copy()
    p[:10] = 0.0
    rep = estimate_value(log.logged, p, log.r, TARGET[log.x], actions=ACTIONS,
                         contexts=log.contexts, clip=2.0)
    assert rep["n"] == 1990 and rep["skipped"] == 10
    d = rep["diagnostics"]
    assert d["max_weight"] > 2.0 and d["clipped"] > 0 and d["mean_weight"] <= 2.0
    unclipped = estimate_value(log.logged, p, log.r, TARGET[log.x], actions=ACTIONS,
                               estimators=["ips"])
    assert rep["estimates"]["ips"]["value"] < unclipped["estimates"]["ips"]["value"]


def test_bootstrap_intervals_reproduce_with_the_seed():
    log = synthetic(800, seed=4)
    one = run(log, TARGET[log.x], seed=3)
    assert run(log, TARGET[log.x], seed=3) == one
    assert run(log, TARGET[log.x], seed=4)["estimates"]["ips"] != one["estimates"]["ips"]


@pytest.mark.parametrize("kwargs,message", [
    ({"logged_actions": [], "propensity": [], "reward": [], "target": []}, "no decisions"),
    ({"propensity": [1.5, 0.5]}, "above 1"),
    ({"propensity": [0.0, 0.0]}, "probability 0"),
    ({"target": np.array([[0.5, 0.4], [0.5, 0.5]])}, "sum to 0.9"),
    ({"reward": [1.0, float("nan")]}, "finite"),
    ({"clip": 0}, "clip must be positive"),
    ({"estimators": ["ipw"]}, "unknown estimator"),
])
def test_bad_input_is_a_clear_error(kwargs, message):
    args = {"logged_actions": ["a", "b"], "propensity": [0.5, 0.5], "reward": [1.0, 0.0],
            "target": np.array([[0.5, 0.5], [0.5, 0.5]]), "actions": ["a", "b"]}
    args.update(kwargs)
    with pytest.raises(RunError, match=message):
        estimate_value(args.pop("logged_actions"), args.pop("propensity"),
                       args.pop("reward"), args.pop("target"), **args)


# --- ltrr's logs ---------------------------------------------------------------------------

ALLOCS = [{"lex": 10}, {"lex": 5, "mem": 5}, {"mem": 10}]
PMF = [(al, 1 / 3) for al in ALLOCS]


class OracleByType:
    """A candidate policy scoring logged features: lex-type → split, mem-type → mem:10."""

    name = "oracle"

    def pmf_logged(self, features, actions):
        best = {"lex": {"lex": 5, "mem": 5}, "mem": {"mem": 10}}[features["qtype"]]
        return [1.0 if al == best else 0.0 for al in actions]


class LoggerPolicy:
    name = "uniform-again"

    def pmf_logged(self, features, actions):
        return [1 / 3 if al in ALLOCS else 0.0 for al in actions]


def logged_world(n: int, seed: int, namespaced: bool = False):
    """Decisions of a uniform logger; the target is found by lex at rank 3 (lex-type
    queries) or by mem at rank 7 (mem-type): reward = target in the candidate set.
    Logged features: ``{"qtype": t}``, or as a learning policy's namespaces."""
    rng = np.random.default_rng(seed)
    decisions, events = [], []
    for i in range(n):
        qtype = "lex" if rng.random() < 0.6 else "mem"
        j = int(rng.integers(0, 3))
        alloc = ALLOCS[j]
        found = {"lex": ("lex", 3), "mem": ("mem", 7)}[qtype]
        cands = {arm: [Candidate(f"{arm}{r}" if (arm, r) != found else "target", arm, r, 1.0)
                       for r in range(1, k + 1)] for arm, k in alloc.items()}
        rid = f"r{i}"
        decisions.append(Decision(
            rid, Query(rid, f"q{i}", "u1"), "h", [],
            Action(alloc, 1 / 3, PMF, j, {"query": {"qtype": qtype}} if namespaced
                   else {"qtype": qtype}), cands,
            [Ranked(1, "x", 1.0, [])], {}, [], float(i)))
        events.append({"event_id": f"e{i}", "request_id": rid, "user_id": "u1",
                       "entity_id": "target", "type": "play", "position": None,
                       "timestamp": float(i), "query": None})
    return decisions, pl.DataFrame(events, schema=EVENT_SCHEMA)


class NullArm(Arm):
    """An arm for compiling test plans (never run here)."""

    name = "null_arm"

    def retrieve_batch(self, requests):
        return [[] for _ in requests]


@pytest.fixture()
def state(tmp_path):
    pl.DataFrame({"id": ["target"]}).write_parquet(tmp_path / "c.parquet")
    reg = build_registry(extra=[("null", SimpleNamespace(ltrr_components=hookimpl(
        lambda: [NullArm])))])
    spec = load_spec_text("name: t\ncatalog: {path: c.parquet}\n"
                          "arms: [{id: lex, use: null_arm}, {id: mem, use: null_arm}]\n"
                          "policy: {use: static, budget: 10}\noutput: {k: 3}\n",
                          tmp_path / "s.yaml")
    plan = compile_spec(spec, reg)
    decisions, events = logged_world(600, seed=1)
    DecisionLog(tmp_path / "state" / "decisions").append(decisions)
    EventLog(tmp_path / "state" / "events").append_new(events)
    return plan, tmp_path / "state", decisions


def test_evaluate_log_with_a_pmf_logged_policy():
    decisions, _ = logged_world(900, seed=2)
    from ltrr.runtime.decision_log import decision_frame

    frame = decision_frame(decisions)
    # reward: the target was among the candidates
    rewards = pl.DataFrame({"request_id": [d.request_id for d in decisions],
                            "reward": [float(any(c.entity_id == "target"
                                                 for cs in d.candidates.values() for c in cs))
                                       for d in decisions]})
    rep = evaluate_log(None, OracleByType(), frame, rewards)
    assert rep["target_pmf"] == "pmf_logged" and rep["actions"] == 3
    for e in rep["estimates"].values():                  # the oracle always finds it
        assert e["low"] <= 1.0 <= e["high"] + 1e-9 and abs(e["value"] - 1.0) < 0.12
    same = evaluate_log(None, LoggerPolicy(), frame, rewards)
    assert same["estimates"]["ips"]["value"] == pytest.approx(rewards["reward"].mean())
    # rewards missing for some requests: 0 by default, dropped with missing_reward=None
    dropped = evaluate_log(None, LoggerPolicy(), frame, rewards.head(300), missing_reward=None)
    assert dropped["n"] == 300 and dropped["without_reward"] == 600


def bandit_candidate(tmp_path, use: str, with_: str):
    """An opened learning policy over arms lex/mem (budget 10) as the OPE candidate."""
    pl.DataFrame({"id": ["target"]}).write_parquet(tmp_path / "c.parquet")
    reg = build_registry(extra=[("null", SimpleNamespace(ltrr_components=hookimpl(
        lambda: [NullArm])))])
    spec = load_spec_text("name: t\ncatalog: {path: c.parquet}\nstate_dir: st\n"
                          "arms: [{id: lex, use: null_arm}, {id: mem, use: null_arm}]\n"
                          f"policy: {{use: {use}, budget: 10, with: {with_}}}\n"
                          "output: {k: 3}\n", tmp_path / "s.yaml")
    ws = Workspace(compile_spec(spec, reg))
    return ws, ws.opened("policy")


@pytest.mark.parametrize("use,with_", [("epsilon_greedy", "{step: 2, epsilon: 0.54}"),
                                       ("vw", "{step: 2, epsilon: 0.3}")])
def test_evaluate_log_counts_a_bandit_candidates_mass_on_never_logged_allocations(
        tmp_path, use, with_):
    # the logger played lex 10 / lex 5 + mem 5 / mem 10 uniformly; the candidate allocates
    # in steps of 2, so lex 8 + mem 2 ... lex 2 + mem 8 were never logged
    from ltrr.feedback.interactions import interactions
    from ltrr.runtime.decision_log import decision_frame

    decisions, events = logged_world(600, seed=3, namespaced=True)
    frame = decision_frame(decisions)
    reward = [float(any(c.entity_id == "target" for cs in d.candidates.values() for c in cs))
              for d in decisions]
    rewards = pl.DataFrame({"request_id": [d.request_id for d in decisions], "reward": reward})
    ws, policy = bandit_candidate(tmp_path, use, with_)
    try:
        # trained on the first half of the log: its pmf depends on the query type
        policy.learn(interactions(events.head(300), frame.head(300), {"play": 1.0}))
        # first principles: the candidate's whole pmf (its public pmf()), the logged pmfs
        target = [{action_key(a): p for a, p in policy.pmf([d.action.features])[0]}
                  for d in decisions]
        logging = [{action_key(a): p for a, p in d.action.pmf} for d in decisions]
        logged = [action_key(d.action.allocation) for d in decisions]
        want = by_hand(logged, [d.action.probability for d in decisions], reward, target,
                       logging, [d.action.features["query"]["qtype"] for d in decisions])
        assert 0.1 < want["unsupported_mass"] < 0.9
        rep = evaluate_log(None, policy, frame, rewards, reward_model="mean", folds=1,
                           ci="clt")
    finally:
        ws.close()
    assert rep["target_pmf"] == "pmf_logged" and rep["actions"] == 7   # 3 logged + 4 new
    assert rep["diagnostics"]["unsupported_mass"] == pytest.approx(want["unsupported_mass"])
    for name in ("ips", "snips", "dr"):
        assert rep["estimates"][name]["value"] == pytest.approx(want[name]), name
        assert rep["estimates"][name]["reliable"] is False
    assert rep["warnings"] and "never" in rep["warnings"][0]
    out = io.StringIO()
    print_ope_table(rep, Console(file=out, width=200))
    assert "IPS (unreliable)" in out.getvalue() and "warning:" in out.getvalue()


class HidesItsActions:
    """Gives its true probability of the logged allocations but cannot list the two it
    also plays: OPE cannot count that mass, so it must refuse, not renormalise."""

    name = "hides"

    def pmf_logged(self, features, actions):
        return [0.2 if al in ALLOCS else 0.0 for al in actions]      # 0.4 elsewhere


def test_a_pmf_logged_that_does_not_sum_to_one_is_a_clear_error():
    decisions, _ = logged_world(20, seed=4)
    from ltrr.runtime.decision_log import decision_frame

    frame = decision_frame(decisions)
    rewards = pl.DataFrame({"request_id": [d.request_id for d in decisions],
                            "reward": [1.0] * len(decisions)})
    with pytest.raises(RunError, match=r"request 'r0'\) a total probability of 0.6 over the "
                                       r"3 actions") as err:
        evaluate_log(None, HidesItsActions(), frame, rewards)
    assert "playable_actions()" in err.value.hint


def test_ope_report_reads_a_state_folder_and_evaluates_the_static_policy(state):
    plan, log_dir, decisions = state
    ws = Workspace(plan)
    static = ws.opened("policy")                       # the real static policy: lex 5 + mem 5
    rep = ope_report(plan, log_dir, static)
    lex_share = np.mean([d.action.features["qtype"] == "lex" for d in decisions])
    assert rep["target_pmf"] == "choose_batch" and rep["rewards_from"] == "feedback weights"
    assert rep["policy"] == "static" and rep["node"] == "policy" and rep["n"] == 600
    # the split finds lex-type targets only: its true value on this log is the lex share
    for name, e in rep["estimates"].items():
        assert e["low"] <= lex_share <= e["high"], (name, e, lex_share)
    assert rep["diagnostics"]["max_weight"] == pytest.approx(3.0)
    out = io.StringIO()
    print_ope_table(rep, Console(file=out, width=120))
    text = out.getvalue()
    for word in ("IPS", "SNIPS", "DR", "95% CI", "effective sample size", "bootstrap"):
        assert word in text
    json.dumps(rep)                                    # JSON-ready for --json


def test_ope_report_errors_name_the_fix(state, tmp_path):
    plan, _, _ = state
    with pytest.raises(StateError, match="no decision log"):
        ope_report(plan, tmp_path, None)          # a folder without decisions/
    with pytest.raises(StateError, match="does not exist"):
        ope_report(plan, tmp_path / "nowhere", None)
    empty = pl.DataFrame(schema={"request_id": pl.String, "allocation": pl.List(pl.Struct(
        {"arm": pl.String, "k": pl.Int32})), "probability": pl.Float64})
    with pytest.raises(RunError, match="empty"):
        evaluate_log(plan, OracleByType(), empty,
                     pl.DataFrame(schema={"request_id": pl.String, "reward": pl.Float64}))


def _two_arm_spec(folder, name: str, policy: str, budget: int) -> str:
    """A spec over ``folder/c.parquet``: two entity-lookup arms, ``policy`` with
    ``budget`` in steps of 2, its state in ``folder/st-<name>``."""
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ncatalog: {{path: c.parquet}}\nstate_dir: st-{name}\n"
        "slotters: [{id: u, use: dictionary, with: {slots: {n: {column: name, "
        "entity: true, min_chars: 1}}}}]\n"
        "arms: [{id: one, use: entity_lookup, from: [u]}, "
        "{id: two, use: entity_lookup, from: [u]}]\n"
        f"policy: {{use: {policy}, budget: {budget}, with: {{step: 2, seed: 3}}}}\n"
        "output: {k: 2}\n")
    return str(path)


def test_evaluate_log_cli_estimates_a_policy_on_a_logged_pipeline(tmp_path):
    """Log decisions with a uniform policy, add feedback, then `ltrr evaluate --log`."""
    import json as _json
    import os
    import subprocess
    import sys

    import polars as pl

    ltrr = os.path.join(os.path.dirname(sys.executable), "ltrr")
    pl.DataFrame({"id": ["a", "b", "c"], "name": ["alpha", "beta", "gamma"]}).write_parquet(
        tmp_path / "c.parquet")

    def spec(name: str, policy: str) -> str:
        return _two_arm_spec(tmp_path, name, policy, budget=4)

    logged = spec("logged", "uniform")
    queries = tmp_path / "q.tsv"
    queries.write_text("".join(f"r{i}\talpha beta\n" for i in range(40)))
    done = subprocess.run([ltrr, "run", logged, "--queries", str(queries), "--format", "jsonl"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # varied rewards (weights 3, 2, 1, and 0 for a skip — the policies' reward is floored
    # at 0 — and without an event), so the estimates depend on every weight pi(a_i) / p_i:
    # a wrong propensity changes them
    types = ["purchase", "favorite", "play", "skip", None]
    weight = {"purchase": 3.0, "favorite": 2.0, "play": 1.0, "skip": 0.0, None: 0.0}
    events = tmp_path / "e.jsonl"
    events.write_text("".join(_json.dumps({"request_id": f"r{i}", "entity_id": "a",
                                           "type": types[i % 5]}) + "\n"
                              for i in range(40) if types[i % 5]))
    done = subprocess.run([ltrr, "feedback", logged, str(events)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    candidate = spec("candidate", "epsilon_greedy")
    done = subprocess.run([ltrr, "evaluate", candidate, "--log", str(tmp_path / "st-logged"),
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = _json.loads(done.stdout)
    # every action finds 'a' (both arms look it up), so a decision's reward is its weight;
    # the untrained epsilon-greedy candidate (epsilon 0.1) plays its first action, one: 4,
    # with 0.9 + 0.1 / 3 and the others with 0.1 / 3; the uniform logger had 1 / 3 each
    logged_rows = pl.read_parquet(tmp_path / "st-logged" / "decisions" / "*.parquet")
    r, w = [], []
    for rid, alloc, p in logged_rows.select("request_id", "allocation",
                                            "probability").iter_rows():
        r.append(weight[types[int(rid[1:]) % 5]])
        w.append((0.1 / 3 + 0.9 * (alloc == [{"arm": "one", "k": 4}])) / p)
    r, w = np.array(r), np.array(w)
    assert len(set(r)) == 4 and len(set(w.round(9))) == 2
    assert report["n"] == 40 and report["logged_value"] == pytest.approx(r.mean())
    assert report["diagnostics"]["unsupported_mass"] == 0 and report["warnings"] == []
    assert report["estimates"]["ips"]["value"] == pytest.approx(np.mean(w * r))
    assert report["estimates"]["snips"]["value"] == pytest.approx((w * r).sum() / w.sum())
    for name in ("ips", "snips", "dr"):
        est = report["estimates"][name]
        assert est["low"] <= est["value"] <= est["high"] and est["reliable"]
    bad = subprocess.run([ltrr, "evaluate", candidate, "--log", str(tmp_path / "nowhere")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_evaluate_log_json_is_strict_json_when_an_estimate_is_undefined(tmp_path):
    """A candidate that never plays a logged allocation has no SNIPS (0 / 0). Before, the
    report printed `NaN`, which is not JSON (jq and strict parsers refuse it); now it is
    null, with the warning that says why."""
    import json as _json
    import os
    import subprocess
    import sys

    import polars as pl

    ltrr = os.path.join(os.path.dirname(sys.executable), "ltrr")
    pl.DataFrame({"id": ["a", "b"], "name": ["alpha", "beta"]}).write_parquet(
        tmp_path / "c.parquet")

    def spec(name: str, budget: int) -> str:
        return _two_arm_spec(tmp_path, name, "uniform", budget)

    logged = spec("logged", 4)
    queries = tmp_path / "q.tsv"
    queries.write_text("".join(f"r{i}\talpha\n" for i in range(12)))
    done = subprocess.run([ltrr, "run", logged, "--queries", str(queries), "--format", "jsonl"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    events = tmp_path / "e.jsonl"
    events.write_text("".join(_json.dumps({"request_id": f"r{i}", "entity_id": "a",
                                           "type": "play"}) + "\n" for i in range(0, 12, 2)))
    done = subprocess.run([ltrr, "feedback", logged, str(events)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    candidate = spec("candidate", 8)             # budget 8: no allocation was ever logged
    done = subprocess.run([ltrr, "evaluate", candidate, "--log", str(tmp_path / "st-logged"),
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    report = _json.loads(done.stdout, parse_constant=refuse)
    assert report["diagnostics"]["unsupported_mass"] == pytest.approx(1.0)
    assert report["estimates"]["snips"]["value"] is None
    assert report["estimates"]["ips"]["value"] == 0.0
    assert report["warnings"]

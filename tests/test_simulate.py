"""``ltrr simulate``: the lastfm user model, the serve → engage → learn loop, regret, plots."""

from __future__ import annotations

import json
from collections import Counter
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import ltrr.registry
import ltrr_plugins.simulators.lastfm as lastfm_plugin
from ltrr.cli import main
from ltrr.compiler import load_plan
from ltrr.errors import RunError
from ltrr.runtime.batch import index_plan
from ltrr.simulate import Session
from ltrr.simulate.engine import PolicyChoice, SimConfig, make_user_model
from ltrr.simulate.regret import allocation_grid, rewards
from ltrr.simulate.report import write_report
from ltrr.simulate.sweep import simulate

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples/data/lastfm"
PNG = b"\x89PNG\r\n\x1a\n"

SPEC = f"""
name: simtest
catalog: {{path: {DATA / 'artists.parquet'}, id: artist_id, title: name}}
slotters:
  - id: understand
    use: dictionary
    with:
      slots:
        tag: {{column: tags, min_count: 5, min_chars: 3}}
        artist: {{column: name, entity: true, min_chars: 3}}
arms:
  - id: names
    use: entity_lookup
    from: [understand]
    seeds: 20
  - id: lexical
    use: bm25
    with: {{fields: {{name: 3.0, tag_text: 1.0}}}}
  - id: memory
    use: memory
    max_k: 200
    with:
      name: {{column: name}}
      attributes:
        - {{column: tags, weight: 0.6, top_n: 50, rank_decay: 0.15}}
      popularity: popularity
policy:
  use: static
  budget: 40
  with: {{allocation: {{names: 10, lexical: 20, memory: 10}}}}
merge: {{use: rrf}}
output: {{k: 10}}
"""


@pytest.fixture(scope="module")
def registry():
    """The installed plugins, plus the lastfm user model if its entry point is not installed."""
    reg = ltrr.registry.default_registry()
    if "lastfm" in reg.user_models:
        return reg
    return ltrr.registry.build_registry(extra=[("lastfm", lastfm_plugin)])


@pytest.fixture(scope="module")
def spec(tmp_path_factory, registry) -> Path:
    path = tmp_path_factory.mktemp("sim") / "spec.yaml"
    path.write_text(SPEC)
    index_plan(load_plan(path, registry))
    return path


@pytest.fixture(scope="module")
def plan(spec, registry):
    return load_plan(spec, registry)


@pytest.fixture(scope="module")
def users(plan, registry):
    return make_user_model(plan, "lastfm", {}, registry)


def run(plan, registry, out: Path, n=200, seed=7, policies=None, **user):
    policies = policies or [
        PolicyChoice("static", "static", dict(plan.model.policy.with_)),
        PolicyChoice("lexical", "static", {"allocation": {"lexical": 40}})]
    result = simulate(plan, "lastfm", user, policies,
                      SimConfig(sessions=n, seed=seed, round_size=50, keep_state=out / "state"),
                      registry=registry)
    return result, write_report(result, out)


@pytest.fixture(scope="module")
def simulated(plan, registry, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result, summary = run(plan, registry, out)
    return result, summary, out


# --- the user model -----------------------------------------------------------------------

def test_targets_are_drawn_in_proportion_to_plays(users):
    plays = pl.read_parquet(DATA / "plays.parquet").with_columns(
        pl.col("user_id").cast(pl.String), pl.col("artist_id").cast(pl.String))
    share = (plays.with_columns((pl.col("plays") / pl.col("plays").sum().over("user_id"))
                                .alias("p"))
             .group_by("artist_id").agg(pl.col("p").sum())
             .with_columns(pl.col("p") / plays["user_id"].n_unique()))
    expected = dict(share.iter_rows())
    # one type every target can carry, so no target is redrawn for its type
    model = type(users)(type(users).Params(mix={"exact": 1.0}), users.ctx)
    model.open()
    rng = np.random.default_rng(1)
    n = 6000
    seen = Counter(model.sample(rng, 0.0).target for _ in range(n))
    top = sorted(expected, key=expected.get, reverse=True)[:15]
    for artist in top:
        p = expected[artist]
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(seen[artist] - n * p) < 4.5 * sd, (artist, seen[artist], n * p)
    # and a target is always an artist its user plays
    played = set(plays.select("user_id", "artist_id").iter_rows())
    assert all((s.user_id, s.target) in played
               for s in (model.sample(rng, 0.0) for _ in range(300)))


def test_click_model_position_bias_and_play_confirmation(users):
    model = type(users)(type(users).Params(examination=[1.0, 1.0, 0.0]), users.ctx)
    model.open()
    rng = np.random.default_rng(0)
    s = Session("2", "51", "duran duran", "exact")
    events = model.engage(s, ["51", "52", "53", "54"], rng)
    assert [(e.type, e.entity_id, e.position) for e in events] == [
        ("click", "51", 1), ("skip", "52", 2), ("play", "51", 1)]
    events = model.engage(s, ["52", "53", "51"], rng)       # rank 3 is never examined
    assert [(e.type, e.position) for e in events] == [("skip", 1), ("skip", 2)]   # silence
    events = model.engage(s, ["52"], rng)                   # not shown: nothing follows
    assert [e.type for e in events] == ["skip"]
    # play_after_miss: a user who missed the target finds it elsewhere and plays it
    model = type(users)(type(users).Params(examination=[1.0, 1.0, 0.0],
                                           play_after_miss=True), users.ctx)
    model.open()
    events = model.engage(s, ["52", "53", "51"], rng)
    assert [(e.type, e.position) for e in events] == [("skip", 1), ("skip", 2), ("play", 3)]
    events = model.engage(s, ["52"], rng)
    assert events[-1].type == "play" and events[-1].position is None
    # 1/r**eta: with eta=1 the click rate at rank 4 is about 1/4
    model = type(users)(type(users).Params(skips=False), users.ctx)
    model.open()
    clicks = sum(any(e.type == "click" for e in model.engage(s, ["1", "2", "3", "51"], rng))
                 for _ in range(4000))
    assert 0.22 < clicks / 4000 < 0.28


def test_mix_schedule_shifts_query_types(users):
    model = type(users)(type(users).Params(
        mix={"exact": 1.0}, schedule=[{"at": 0.5, "mix": {"tag": 1.0}}]), users.ctx)
    model.open()
    rng = np.random.default_rng(3)
    types = [model.sample(rng, i / 100).type for i in range(100)]
    assert set(types[:50]) == {"exact"} and set(types[50:]) == {"tag"}
    assert model.mix_changes() == [0.5]


def test_bad_user_model_params_name_the_field(plan, registry):
    with pytest.raises(RunError) as e:
        make_user_model(plan, "lastfm", {"eta": -1}, registry)
    assert e.value.field == "with.eta" and e.value.node == "lastfm"
    with pytest.raises(RunError) as e:
        make_user_model(plan, "lastfm", {"mix": {"exat": 1}}, registry)
    assert e.value.field == "with.mix" and "exat" in str(e.value)
    with pytest.raises(RunError) as e:
        make_user_model(plan, "lastfm", {"colour": 1}, registry)
    assert e.value.field == "with.colour" and "eta" in e.value.hint
    with pytest.raises(RunError) as e:
        make_user_model(plan, "lastfn", {}, registry)
    assert "did you mean 'lastfm'" in e.value.hint


# --- accounting ---------------------------------------------------------------------------

def test_allocation_grid_and_rewards():
    grid = allocation_grid(("a", "b", "c"), 4, 2, 3, {"a": 4, "b": 2, "c": 4})
    assert sorted(grid) == sorted([(4, 0, 0), (0, 0, 4), (2, 2, 0), (2, 0, 2), (0, 2, 2)])
    ranks = np.array([[3, 0, 0], [0, 1, 0], [0, 0, 0]])
    r = rewards(ranks, [(4, 0, 0), (2, 2, 0)])
    assert r.tolist() == [[True, False], [False, True], [False, False]]


# --- the loop -----------------------------------------------------------------------------

def test_summary_structure_and_baselines(simulated):
    result, summary, out = simulated
    assert summary["sessions"] == 200 and summary["arms"] == ["names", "lexical", "memory"]
    assert sum(summary["query_types"].values()) == 200
    for label in ("static", "lexical"):
        p = summary["policies"][label]
        assert set(p) >= {"recall", "recall_by_quarter", "recall_by_type", "best_fixed",
                          "oracle_per_type", "oracle_per_session", "regret",
                          "arm_share_by_type", "reward_check", "timings"}
        assert len(p["recall_by_quarter"]) == 4
        per_q = p["regret"]["per_1000_by_quarter"]
        assert len(per_q["vs_best_fixed"]) == len(per_q["vs_type_oracle"]) == 4
        # a static allocation is among the comparators: the best one in hindsight is as good
        assert p["regret"]["vs_best_fixed"] >= 0
        assert p["oracle_per_type"]["recall"] >= p["best_fixed"]["recall"] >= p["recall"]
        assert p["oracle_per_session"]["recall"] >= p["oracle_per_type"]["recall"]
        assert p["regret"]["vs_type_oracle"] >= p["regret"]["vs_best_fixed"]
        # the probe's ranks predict the served candidate set exactly
        assert p["reward_check"]["mismatches"] == 0
        assert 0 < p["recall"] < 1
    shares = summary["policies"]["lexical"]["arm_share_by_type"]
    assert all(s == {"names": 0.0, "lexical": 1.0, "memory": 0.0} for s in shares.values())
    assert json.loads((out / "summary.json").read_text())["sessions"] == 200


def test_regret_matches_per_session_records(simulated):
    _, summary, out = simulated
    df = pl.read_parquet(out / "sessions.parquet")
    assert df.height == 400
    for label, p in summary["policies"].items():
        rows = df.filter(pl.col("policy") == label)
        assert rows["reward"].mean() == pytest.approx(p["recall"], abs=1e-4)
        regret = rows["best_fixed"].cast(int).sum() - rows["reward"].cast(int).sum()
        assert regret == p["regret"]["vs_best_fixed"]
    # the same sessions for every policy
    a, b = (df.filter(pl.col("policy") == x).select("target", "query") for x in
            ("static", "lexical"))
    assert a.equals(b)


def test_plots_are_png(simulated):
    _, summary, out = simulated
    assert set(summary["plots"]) == {"regret", "recall", "arm_share"}
    for path in summary["plots"].values():
        data = Path(path).read_bytes()
        assert data[:8] == PNG and len(data) > 5000


def test_feedback_learned_in_private_state(simulated, plan):
    result, summary, out = simulated
    state = out / "state" / "static"
    events = pl.read_parquet(list((state / "events").glob("*.parquet")))
    clicks = events.filter((pl.col("type") == "click"))
    # a play confirms each click on the target, and only those (no play after a miss)
    assert 0 < events.filter(pl.col("type") == "play").height == clicks.height < 200
    decisions = pl.read_parquet(list((state / "decisions").glob("*.parquet")))
    assert decisions.height == 200                                    # probes are not logged
    assert (state / "memory.learned" / "cursor.json").exists()        # the memory arm learned
    # the user's own state got no decisions, events or learned memory
    real = plan.spec.state_dir
    assert not (real / "events").exists() and not (real / "memory.learned").exists()
    assert not (real / "decisions").exists()


def test_deterministic_for_a_seed(simulated, plan, registry, tmp_path):
    result, summary, out = simulated
    _, again = run(plan, registry, tmp_path / "again")
    strip = lambda s: {k: {kk: vv for kk, vv in v.items() if kk not in ("timings", "state_dir")}
                       for k, v in s["policies"].items()}  # noqa: E731
    assert strip(again) == strip(summary)
    a = pl.read_parquet(out / "sessions.parquet")
    b = pl.read_parquet(tmp_path / "again" / "sessions.parquet")
    assert a.equals(b)
    _, other = run(plan, registry, tmp_path / "other", n=60, seed=8,
                   policies=[PolicyChoice("static", "static", dict(plan.model.policy.with_))])
    c = pl.read_parquet(tmp_path / "other" / "sessions.parquet")
    assert c["query"].to_list() != a["query"].to_list()[:60]


# --- the command ----------------------------------------------------------------------------

@pytest.fixture()
def cli_registry(monkeypatch, registry):
    """``ltrr simulate`` in-process, with the lastfm entry point present."""
    real = ltrr.registry.entry_points

    def entry_points(group):
        eps = list(real(group=group))
        if not any(ep.name == "lastfm" for ep in eps):
            eps.append(EntryPoint("lastfm", "ltrr_plugins.simulators.lastfm", group))
        return eps

    monkeypatch.setattr(ltrr.registry, "entry_points", entry_points)
    ltrr.registry.default_registry.cache_clear()
    yield
    ltrr.registry.default_registry.cache_clear()


def test_cli_simulate(spec, tmp_path, capsys, cli_registry):
    pol = tmp_path / "all-lexical.yaml"
    pol.write_text("use: static\nwith: {allocation: {lexical: 40}}\n")
    out = tmp_path / "out"
    code = main(["simulate", str(spec), "--sessions", "60", "--round-size", "30",
                 "--policies", f"static,{pol}", "--seed", "1", "--out", str(out), "--json",
                 "--with", "eta=0.5", "--with", "mix={exact: 1, tag: 1}"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary["policies"]) == ["static", "all-lexical"]
    assert summary["policies"]["all-lexical"]["best_fixed"]["recall"] >= \
        summary["policies"]["all-lexical"]["recall"]
    assert summary["user_model"]["params"]["eta"] == 0.5
    assert set(summary["query_types"]) <= {"exact", "tag"}
    assert (out / "regret.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("argv, message", [
    (["--policies", "statc"], "unknown policy 'statc' (hint: did you mean 'static'?"),
    (["--user-model", "lastfn"], "unknown user model 'lastfn' (hint: did you mean 'lastfm'?"),
    (["--with", "eta"], "--with 'eta' is not key=value"),
    (["--with", "eta=-2"], "node 'lastfm' field 'with.eta'"),
    (["--policies", "static,static"], "policies must be given once each"),
    (["--sessions", "0"], "--sessions must be positive"),
    (["--rankers", "lightgmb"], "unknown ranker 'lightgmb' (hint: did you mean 'lightgbm'?"),
])
def test_cli_errors(spec, tmp_path, capsys, cli_registry, argv, message):
    code = main(["simulate", str(spec), "--sessions", "5", "--out", str(tmp_path)] + argv)
    err = capsys.readouterr().err
    assert code == 1 and message in err, err
    assert "Traceback" not in err


def test_cli_simulate_compares_rankers_on_the_same_sessions(spec, tmp_path, capsys,
                                                           cli_registry):
    rk = tmp_path / "lgbm.yaml"
    rk.write_text("use: lightgbm\nlabel: lgbm\nwith: {popularity: popularity, min_requests: 20,"
                  " retrain_every: 20, n_estimators: 20}\n")
    code = main(["simulate", str(spec), "--sessions", "80", "--round-size", "20",
                 "--rankers", f"score,{rk}", "--seed", "2", "--out", str(tmp_path / "o"),
                 "--json"])
    assert code == 0
    runs = json.loads(capsys.readouterr().out)["policies"]
    assert list(runs) == ["static+score", "static+lgbm"]
    assert runs["static+lgbm"]["ranker"]["use"] == "lightgbm"
    assert runs["static+score"]["ranker"] == {"use": "score", "with": {}}
    # same sessions, same policy: the same candidates; only the order may differ
    assert runs["static+lgbm"]["recall"] == runs["static+score"]["recall"]
    for r in runs.values():
        assert 0 <= r["mrr"] <= r["target_shown"] and len(r["mrr_by_quarter"]) == 4


def test_cli_bad_policy_params_from_a_file(spec, tmp_path, capsys, cli_registry):
    pol = tmp_path / "bad.yaml"
    pol.write_text("use: static\nwith: {allocation: {lexicon: 40}}\n")
    code = main(["simulate", str(spec), "--sessions", "5", "--out", str(tmp_path / "o"),
                 "--policies", str(pol)])
    err = capsys.readouterr().err
    assert code == 1 and str(pol) in err and "lexicon" in err, err


def test_cli_missing_index(tmp_path, capsys, cli_registry):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    code = main(["simulate", str(spec), "--sessions", "5"])
    err = capsys.readouterr().err
    assert code == 1 and "no index built yet" in err and "ltrr index" in err, err


def _sim_test_arms():
    """A plugin with an arm that sleeps past a 1 ms deadline and one that raises."""
    import time
    from types import SimpleNamespace

    from ltrr.components import Arm
    from ltrr.hookspecs import hookimpl
    from ltrr.types import Candidate

    class NapArm(Arm):
        name = "sim_nap"

        def retrieve_batch(self, requests):
            time.sleep(0.05)
            ids = self.ctx.catalog.ids
            return [[Candidate(e, self.ctx.node_id, r, 1.0 / r)
                     for r, e in enumerate(ids[:q.k], 1)] for q in requests]

    class BoomArm(Arm):
        name = "sim_boom"

        def retrieve_batch(self, requests):
            raise ValueError("index exploded")

    return SimpleNamespace(ltrr_components=hookimpl(lambda: [NapArm, BoomArm]))


def test_simulate_waits_for_slow_arms_and_reports_lost_ones(spec, plan, tmp_path, capsys,
                                                           cli_registry, monkeypatch):
    """Offline, no deadline drops an arm (one sleeping past its 1 ms deadline answers);
    an arm that fails is counted per policy in the summary, named on stderr with a
    request id, and fails the command with --strict."""
    import sys

    import yaml

    monkeypatch.setitem(sys.modules, "ltrr_test_sim_arms", _sim_test_arms())
    real = ltrr.registry.entry_points

    def entry_points(group):
        return [*real(group=group), EntryPoint("simarms", "ltrr_test_sim_arms", group)]

    monkeypatch.setattr(ltrr.registry, "entry_points", entry_points)
    ltrr.registry.default_registry.cache_clear()
    data = yaml.safe_load(SPEC)
    data["state_dir"] = str(plan.spec.state_dir)
    data["arms"] += [{"id": "nap", "use": "sim_nap", "deadline_ms": 1},
                     {"id": "boom", "use": "sim_boom"}]
    data["policy"]["with"]["allocation"] = {"names": 10, "lexical": 10, "nap": 10, "boom": 10}
    variant = tmp_path / "spec.yaml"
    variant.write_text(yaml.safe_dump(data, sort_keys=False))
    args = ["simulate", str(variant), "--sessions", "20", "--round-size", "10"]
    try:
        code = main([*args, "--out", str(tmp_path / "o"), "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        static = json.loads(out)["policies"]["static"]
        # 20 served answers and 20 probes lost 'boom'; 'nap' was waited for
        assert static["dropped_arms"] == {"boom": 40}, static.get("dropped_arms")
        assert "policy static" in err and "arm 'boom' failed" in err, err
        assert "request sim-0-0000000" in err, err
        code = main([*args, "--out", str(tmp_path / "o2"), "--strict"])
        err = capsys.readouterr().err
        assert code == 1 and "--strict" in err, err
    finally:
        ltrr.registry.default_registry.cache_clear()


def test_each_policy_run_shares_the_built_caches_instead_of_rebuilding_them(plan):
    """An encoder's ONNX export (109 MB for MiniLM) lives in <node>.cache beside the
    indexes: every simulated policy links it, read from the one built copy."""
    from ltrr.simulate.engine import policy_state

    node = plan.nodes[0].id
    cache = plan.spec.state_dir / f"{node}.cache"
    created = not cache.exists()
    cache.mkdir(exist_ok=True)
    (cache / "probe.bin").write_bytes(b"built once")
    try:
        with policy_state(plan, "p", None) as state:
            linked = state / f"{node}.cache"
            assert linked.is_symlink() and linked.resolve() == cache.resolve()
            assert (linked / "probe.bin").read_bytes() == b"built once"
        assert cache.is_dir()                 # removing the policy's folder keeps it
    finally:
        (cache / "probe.bin").unlink()
        if created:
            cache.rmdir()

"""Several kinds of entity in one catalog: declared types, typed arms, blending."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from ltrr.compiler import load_plan
from ltrr.errors import CompileError, DataError
from ltrr.runtime.entity_types import blend
from ltrr.runtime.pipeline import Pipeline
from ltrr.spec.models import TypeQuota
from ltrr.types import Query, Ranked

ARTISTS = [("a1", "Rock Giants", ["rock", "metal"]), ("a2", "Soft Rockers", ["rock"]),
           ("a3", "Jazz Cats", ["jazz"]), ("a4", "Blue Notes", ["jazz", "blues"]),
           ("a5", "Metal Heads", ["metal"])]
STATIONS = [("st:rock", "rock radio", ["rock"]), ("st:jazz", "jazz radio", ["jazz"]),
            ("st:metal", "metal radio", ["metal"])]


def typed_folder(folder, catalog_types: bool = True):
    rows = [{"id": i, "kind": "artist", "name": n, "tags": t} for i, n, t in ARTISTS] + \
        [{"id": i, "kind": "station", "name": n, "tags": t} for i, n, t in STATIONS]
    pl.DataFrame(rows).write_parquet(folder / "catalog.parquet")
    pairs = [{"entity": r["id"], "tag": t} for r in rows for t in r["tags"]]
    pl.DataFrame(pairs).write_parquet(folder / "tags.parquet")
    spec = {
        "name": "typed",
        "catalog": {"path": "catalog.parquet", "title": "name",
                    **({"types": {"column": "kind", "values": ["artist", "station"]}}
                       if catalog_types else {})},
        "slotters": [{"id": "u", "use": "dictionary",
                      "with": {"slots": {"artist": {"column": "name", "entity": True,
                                                    "min_chars": 3}}}}],
        "arms": [
            {"id": "artists", "use": "bm25", "types": ["artist"],
             "with": {"fields": {"name": 2.0, "tags": 1.0}}},
            {"id": "stations", "use": "bm25", "types": ["station"],
             "with": {"fields": {"name": 2.0, "tags": 1.0}}},
            {"id": "related", "use": "graph", "types": ["station"], "from": ["u"],
             "with": {"relations": [{"kind": "bipartite", "path": "tags.parquet",
                                     "entity": "entity", "attribute": "tag",
                                     "min_entities": 1}]}},
        ],
        "policy": {"use": "static", "budget": 12,
                   "with": {"allocation": {"artists": 4, "stations": 4, "related": 4}}},
        "output": {"k": 6},
    }
    return spec


def write(folder, spec) -> object:
    path = folder / "typed.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def indexed(folder, spec):
    from ltrr.runtime.batch import index_plan

    plan = load_plan(write(folder, spec))
    index_plan(plan)
    return plan


@pytest.fixture(scope="module")
def typed_plan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("typed")
    return folder, indexed(folder, typed_folder(folder))


def run(plan, text: str):
    with Pipeline(plan, log_decisions=False) as pipe:
        return pipe.run(Query("r1", text))


def test_typed_arms_return_only_their_types_and_results_carry_types(typed_plan):
    _, plan = typed_plan
    d = run(plan, "rock")
    assert {c.entity_type for c in d.candidates["artists"]} == {"artist"}
    assert {c.entity_type for c in d.candidates["stations"]} == {"station"}
    assert d.candidates["stations"][0].entity_id == "st:rock"
    assert all(r.entity_type == ("station" if r.entity_id.startswith("st:") else "artist")
               for r in d.ranking)
    assert {r.entity_type for r in d.ranking} == {"artist", "station"}


def test_graph_arm_expands_from_an_artist_to_stations_only(typed_plan):
    _, plan = typed_plan
    d = run(plan, "Jazz Cats")            # an artist named: its tags lead to stations
    related = d.candidates["related"]
    assert related and {c.entity_type for c in related} == {"station"}
    assert related[0].entity_id == "st:jazz"
    assert related[0].seed == "a3"


def test_quotas_bound_each_type_in_the_results(typed_plan):
    folder, _ = typed_plan
    spec = typed_folder(folder)
    spec["output"]["quotas"] = {"station": {"max": 1}, "artist": {"min": 1}}
    plan = load_plan(write(folder, spec))
    d = run(plan, "rock radio metal")
    kinds = [r.entity_type for r in d.ranking]
    assert kinds.count("station") == 1 and kinds.count("artist") >= 1
    assert [r.rank for r in d.ranking] == list(range(1, len(d.ranking) + 1))
    spec["output"] = {"k": 2}
    plain = [r.entity_type for r in run(load_plan(write(folder, spec)), "Rock Giants").ranking]
    assert plain.count("station") < 2          # without a quota, artists come first
    spec["output"]["quotas"] = {"station": {"min": 2}}
    d = run(load_plan(write(folder, spec)), "Rock Giants")
    assert [r.entity_type for r in d.ranking] == ["station", "station"]


def test_typed_output_in_json_and_untyped_output_unchanged(typed_plan, tmp_path):
    from ltrr.runtime.batch import decision_json

    _, plan = typed_plan
    row = decision_json(run(plan, "rock"), 6)
    assert {r["type"] for r in row["results"]} == {"artist", "station"}

    spec = typed_folder(tmp_path, catalog_types=False)
    for arm in spec["arms"]:
        arm.pop("types")
    untyped = indexed(tmp_path, spec)
    d = run(untyped, "rock")
    assert all(r.entity_type is None for r in d.ranking)
    assert all("type" not in r for r in decision_json(d, 6)["results"])


def test_blend_keeps_the_ranked_order_within_quotas():
    ranked = [Ranked(i + 1, f"e{i}", 1.0 - i / 10, [], t)
              for i, t in enumerate(["a", "a", "a", "b", "a", "b", "b"])]
    ids = lambda rs: [r.entity_id for r in rs]        # noqa: E731
    assert ids(blend(ranked, 4, {"b": TypeQuota(min=2)})) == ["e0", "e1", "e3", "e5"]
    assert ids(blend(ranked, 4, {"a": TypeQuota(max=1)})) == ["e0", "e3", "e5", "e6"]
    assert ids(blend(ranked, 3, {"b": TypeQuota(min=5)})) == ["e3", "e5", "e6"]
    assert ids(blend(ranked, 4, {})) == ["e0", "e1", "e2", "e3"]
    # too few of a type to fill the rest: fewer results, never a type past its max
    assert ids(blend(ranked, 6, {"a": TypeQuota(max=1), "b": TypeQuota(max=2)})) == \
        ["e0", "e3", "e5"]


@pytest.mark.parametrize("change, where, words", [
    (lambda s: s["catalog"].pop("types"), ("arms", 0, "types", 0), "declares no types"),
    (lambda s: s["arms"][0].update(types=["artsit"]), ("arms", 0, "types", 0),
     "did you mean 'artist'"),
    (lambda s: s["output"].update(quotas={"station": {"min": 7}}), ("output", "quotas"),
     "more than the 6 results"),
    (lambda s: s["output"].update(quotas={"station": {"min": 3, "max": 2}}),
     ("output", "quotas", "station"), "min 3 is above max 2"),
    (lambda s: s["catalog"]["types"].update(values=["artist", "artist"]),
     ("catalog", "types", "values"), "declared twice"),
])
def test_wrong_types_are_located_compile_errors(tmp_path, change, where, words):
    spec = typed_folder(tmp_path)
    change(spec)
    path = write(tmp_path, spec)
    with pytest.raises(CompileError) as err:
        load_plan(path)
    from ltrr.spec import load_spec

    line = load_spec(path).locate(where).line
    assert words in str(err.value) and f"typed.yaml:{line}" in str(err.value)


@pytest.mark.parametrize("rows, words", [
    ([{"id": "x", "kind": "podcast", "name": "n", "tags": []}], "undeclared entity type"),
    ([{"id": "x", "kind": None, "name": "n", "tags": []}], "have no entity type"),
    ([{"id": "a1", "kind": "station", "name": "n", "tags": []}], "'a1' appears more than once"),
])
def test_catalog_rows_of_undeclared_types_or_shared_ids_are_data_errors(tmp_path, rows, words):
    spec = typed_folder(tmp_path)
    frame = pl.read_parquet(tmp_path / "catalog.parquet")
    pl.concat([frame, pl.DataFrame(rows, schema=frame.schema)]).write_parquet(
        tmp_path / "catalog.parquet")
    plan = load_plan(write(tmp_path, spec))
    from ltrr.runtime.workspace import Workspace

    with pytest.raises(DataError) as err:
        Workspace(plan).catalog.frame
    assert words in str(err.value) and "typed.yaml:" in str(err.value)
    assert json.dumps(str(err.value))       # one line of text, no traceback


MIXED = Path(__file__).resolve().parents[1] / "examples/data/lastfm/music_mixed.parquet"
MIXED_SPEC = f"""
name: mixedsim
catalog:
  path: {MIXED}
  id: entity_id
  title: name
  types: {{column: kind, values: [artist, station]}}
slotters:
  - id: understand
    use: dictionary
    with:
      slots:
        tag: {{column: tags, min_count: 5, min_chars: 3}}
        name: {{column: name, entity: true, min_chars: 3}}
arms:
  - id: names
    use: entity_lookup
    from: [understand]
  - id: lexical
    use: bm25
    types: [artist]
    with: {{fields: {{name: 3.0, tag_text: 1.0}}}}
  - id: stations
    use: bm25
    types: [station]
    with: {{fields: {{name: 2.0, tag_text: 1.0}}}}
policy:
  use: static
  budget: 20
  with: {{allocation: {{names: 5, lexical: 10, stations: 5}}}}
output: {{k: 10}}
"""


@pytest.fixture(scope="module")
def mixed_plan(tmp_path_factory):
    from ltrr.runtime.batch import index_plan

    path = tmp_path_factory.mktemp("mixed") / "mixed.yaml"
    path.write_text(MIXED_SPEC)
    plan = load_plan(path)
    index_plan(plan)
    return plan


def test_simulated_listeners_want_stations_and_recall_is_reported_by_entity_type(
        mixed_plan, tmp_path):
    import numpy as np

    from ltrr.simulate.engine import PolicyChoice, SimConfig, make_user_model
    from ltrr.simulate.sweep import simulate
    from ltrr.simulate.report import write_report

    users = make_user_model(mixed_plan, "lastfm", {"mix": {"exact": 1, "station": 1}})
    kinds = users.ctx.catalog.type_of
    rng = np.random.default_rng(3)
    sessions = [users.sample(rng, 0.0) for _ in range(300)]
    stations = [s for s in sessions if s.type == "station"]
    assert 100 < len(stations) < 200
    assert all(kinds[s.target] == "station" for s in stations)
    assert all(kinds[s.target] == "artist" for s in sessions if s.type != "station")
    # the query names the station's own tag (its first tag)
    tags = dict(zip(users.ctx.catalog.ids, users.ctx.catalog.frame["tags"].to_list()))
    assert all(tags[s.target][0] in s.text for s in stations)

    result = simulate(mixed_plan, "lastfm", {"mix": {"exact": 1, "station": 1}},
                      [PolicyChoice("static", "static", dict(mixed_plan.model.policy.with_)),
                       PolicyChoice("artists", "static", {"allocation": {"lexical": 20}})],
                      SimConfig(sessions=200, seed=5, round_size=50,
                                keep_state=tmp_path / "state"))
    summary = write_report(result, tmp_path / "out")
    by_kind = summary["policies"]["artists"]["recall_by_entity_type"]
    assert set(by_kind) == {"artist", "station"}
    assert by_kind["station"] == 0.0           # an artists-only arm finds no station
    assert summary["policies"]["static"]["recall_by_entity_type"]["station"] > 0.5


def test_station_queries_need_a_typed_catalog(tmp_path):
    from ltrr.errors import RunError
    from ltrr.simulate.engine import make_user_model

    spec = yaml.safe_load(MIXED_SPEC)
    spec["catalog"].pop("types")
    for arm in spec["arms"]:
        arm.pop("types", None)
    path = tmp_path / "untyped.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(RunError) as err:
        make_user_model(load_plan(path), "lastfm", {"mix": {"exact": 1, "station": 1}})
    assert "needs a catalog with entity type 'station'" in str(err.value)


def test_evaluate_by_entity_type_groups_queries_by_what_they_look_for(typed_plan, tmp_path):
    from ltrr.runtime.batch import evaluate_plan

    _, plan = typed_plan
    (tmp_path / "q.tsv").write_text("1\trock radio\n2\tJazz Cats\n3\tmetal\n")
    (tmp_path / "qrels.txt").write_text("1 0 st:rock 1\n2 0 a3 1\n3 0 a5 1\n3 0 st:metal 1\n")
    result, _ = evaluate_plan(plan, tmp_path / "q.tsv", tmp_path / "qrels.txt",
                              measures=["R@10"], by="entity_type")
    groups = result["groups"]
    assert {k: v["queries"] for k, v in groups.items()} == \
        {"station": 1, "artist": 1, "artist+station": 1}
    assert groups["station"]["measures"]["R@10"] == 1.0


def test_the_mixed_catalog_is_what_its_build_script_makes():
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "build_lastfm_stations", root / "scripts/build_lastfm_stations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build(root / "examples/data/lastfm", 30)
    from polars.testing import assert_frame_equal

    assert_frame_equal(built, pl.read_parquet(MIXED))
    stations = built.filter(pl.col("kind") == "station")
    assert stations.height == 321 and stations["entity_id"].n_unique() == 321
    assert all(" " not in e for e in stations["entity_id"].to_list())   # TREC-safe ids


def test_the_engaged_entity_type_is_joined_to_each_event(tmp_path):
    from ltrr.feedback.ingest import Joined, event_log, ingest
    from ltrr.feedback.schema import EVENT_SCHEMA

    spec = typed_folder(tmp_path)
    plan = indexed(tmp_path, spec)
    with Pipeline(plan) as pipe:
        d = pipe.run(Query("fb1", "rock"))
    shown = {r.entity_type: r.entity_id for r in d.ranking}
    events = pl.DataFrame(
        [{"event_id": f"e{i}", "request_id": "fb1", "entity_id": e, "type": "click",
          "timestamp": 1.7e9} for i, e in enumerate([shown["artist"], shown["station"],
                                                     "not-in-catalog"])],
        schema_overrides=EVENT_SCHEMA).select(
            [pl.col(c) if c in ("event_id", "request_id", "entity_id", "type", "timestamp")
             else pl.lit(None, dtype=t).alias(c) for c, t in EVENT_SCHEMA.items()])
    ingest(plan, events)
    joined, _ = Joined(plan).of(event_log(plan).pieces())
    got = dict(zip(joined["entity_id"], joined["entity_type"]))
    assert got == {shown["artist"]: "artist", shown["station"]: "station",
                   "not-in-catalog": None}


def test_type_weights_scale_an_engagement_by_the_engaged_entity_type():
    from ltrr.feedback.interactions import interaction_frame
    from ltrr_plugins.policies.reward import RewardParams, outcomes

    def row(rid, entity, kind):
        return {"event_id": rid, "request_id": rid, "entity_id": entity, "type": "click",
                "weight": 1.0, "timestamp": 1.0, "in_candidates": True, "arms": ["a"],
                "allocation": [{"arm": "a", "k": 5}], "probability": 1.0,
                "entity_type": kind}

    frame = interaction_frame([row("r1", "x", "station"), row("r2", "y", "artist"),
                               row("r3", "z", None)])
    plain = {o.request_id: o.reward for o in outcomes(frame)}
    assert plain == {"r1": 1.0, "r2": 1.0, "r3": 1.0}
    weighted = outcomes(frame, RewardParams(type_weights={"station": 2.5, "artist": 0.5}))
    assert {o.request_id: o.reward for o in weighted} == {"r1": 2.5, "r2": 0.5, "r3": 1.0}
    with pytest.raises(ValueError, match="finite number"):
        RewardParams(type_weights={"station": -1.0})


def test_type_weights_must_name_declared_types(tmp_path):
    spec = typed_folder(tmp_path)
    spec["policy"] = {"use": "epsilon_greedy", "budget": 12,
                      "with": {"reward": {"type_weights": {"stations": 2.0}}}}
    with pytest.raises(CompileError) as err:
        load_plan(write(tmp_path, spec))
    assert "'stations' is not an entity type" in str(err.value)
    assert "types: artist, station" in str(err.value)


def test_type_words_become_type_intent_slots_the_policy_sees(tmp_path):
    from ltrr_plugins.policies.features import ContextFeaturizer

    spec = typed_folder(tmp_path)
    spec["slotters"][0]["with"]["types"] = {"station": ["radio", "station", "radio station"]}
    plan = indexed(tmp_path, spec)
    slots = run(plan, "jazz cats radio station").slots
    intents = [s for s in slots if s.name == "type"]
    assert [(s.value, s.entity_type) for s in intents] == [("station", "station")]
    assert "jazz cats radio station"[intents[0].start:intents[0].end] == "radio station"
    names = [s for s in slots if s.name == "artist"]
    assert [(s.entity_id, s.entity_type) for s in names] == [("a3", "artist")]
    # inside another slot's span too: the station named "rock radio" asks for a station
    assert any(s.name == "type" for s in run(plan, "Rock Radio").slots)
    assert not any(s.name == "type" for s in run(plan, "jazz cats").slots)
    features = ContextFeaturizer.slot_features("jazz cats radio station", slots)
    assert features["type_exact_station"] == 1.0 and features["artist_exact_artist"] == 1.0


@pytest.mark.parametrize("types, where, words", [
    ({"stations": ["radio"]}, ("slotters", 0, "with", "types", "stations"),
     "'stations' is not an entity type"),
    ({"station": ["  "]}, ("slotters", 0, "with", "types", "station", 0), "no word to match"),
])
def test_type_intents_must_name_declared_types(tmp_path, types, where, words):
    spec = typed_folder(tmp_path)
    spec["slotters"][0]["with"]["types"] = types
    path = write(tmp_path, spec)
    with pytest.raises(CompileError) as err:
        load_plan(path)
    from ltrr.spec import load_spec

    assert words in str(err.value)
    assert f"typed.yaml:{load_spec(path).locate(where).line}" in str(err.value)


def test_ranker_type_features_tell_the_candidate_type_and_the_type_asked(typed_plan):
    from ltrr.types import Candidate, Merged, RankRequest, Slot
    from ltrr_plugins.rankers.features import (FeatureBuilder, RankerFeatureParams,
                                               UserProfiles)

    _, plan = typed_plan
    with Pipeline(plan, log_decisions=False) as pipe:
        catalog = pipe.catalog
    params = RankerFeatureParams(features=["types"])
    b = FeatureBuilder(params, ("artists",), catalog, UserProfiles(), ("artist", "station"))
    assert b.names == ["type.artist", "type.artist.asked", "type.station",
                       "type.station.asked", "type.match"]
    merged = [Merged("st:rock", 0.5, [Candidate("st:rock", "artists", 1, 1.0)]),
              Merged("a1", 0.4, [Candidate("a1", "artists", 2, 1.0)])]
    intent = Slot("type", "station", 5, 10, 1.0, None, "station")

    def features(slots):
        x = b.matrix([RankRequest(Query("r", "rock radio"), slots, merged, 2)])[0]
        return {n: x[:, i].tolist() for i, n in enumerate(b.names)}

    f = features([intent])
    assert f["type.station"] == [1, 0] and f["type.artist"] == [0, 1]
    assert f["type.station.asked"] == [1, 1] and f["type.artist.asked"] == [0, 0]
    assert f["type.match"] == [1, 0]
    plain = features([])
    assert plain["type.match"] == [0, 0] and plain["type.station.asked"] == [0, 0]
    # untyped: the group adds no column, so single-type rankers keep their features
    assert FeatureBuilder(RankerFeatureParams(), ("artists",), catalog,
                          UserProfiles()).names == FeatureBuilder(
        RankerFeatureParams(features=["arms", "fused", "slots", "personal"]), ("artists",),
        catalog, UserProfiles()).names


def test_a_learned_ranker_learns_which_type_to_put_first_from_feedback(tmp_path):
    from ltrr.feedback.ingest import ingest
    from ltrr.feedback.schema import EVENT_SCHEMA

    spec = typed_folder(tmp_path)
    spec["slotters"][0]["with"]["types"] = {"station": ["radio"]}
    spec["ranker"] = {"use": "lightgbm", "with": {
        "features": ["types", "fused"], "min_requests": 40, "retrain_every": 40,
        "n_estimators": 40}}
    plan = indexed(tmp_path, spec)
    texts = [f"{word} {tag}{radio}" for tag in ("rock", "jazz", "metal", "blues")
             for word in ("best", "top", "new", "old", "good") for radio in ("", " radio")]

    def wanted(d):       # a listener saying "radio" plays the station, else an artist
        kind = "station" if "radio" in d.query.text else "artist"
        return next((r for r in d.ranking if r.entity_type == kind), None)

    def serve(pipe, start):
        ds = pipe.run_batch([Query(f"r{start + i}", texts[i % len(texts)])
                             for i in range(len(texts))])
        rows = [{"event_id": f"e{d.request_id}", "request_id": d.request_id,
                 "entity_id": w.entity_id, "type": "click", "position": w.rank,
                 "timestamp": 1.7e9 + start} for d in ds if (w := wanted(d))]
        return ds, pl.DataFrame(rows, schema=EVENT_SCHEMA)

    def first_is_wanted(ds):
        return sum(d.ranking[0].entity_type == ("station" if "radio" in d.query.text
                                                else "artist") for d in ds) / len(ds)

    with Pipeline(plan) as pipe:
        before, events = serve(pipe, 0)
        for n in range(1, 4):
            ingest(plan, events, workspace=pipe.workspace)
            after, events = serve(pipe, 100 * n)
    assert first_is_wanted(before) < 0.8      # the fused order mixes them up
    assert first_is_wanted(after) == 1.0


def test_a_link_relation_expands_across_types_row_by_row(tmp_path):
    from ltrr.runtime.batch import index_plan

    pl.DataFrame({"station": ["st:metal", "st:metal", "st:jazz", "st:nowhere", "a1"],
                  "artist": ["a3", "a5", "a4", "a1", "a1"], "plays": [5, 9, 1, 1, 1]}
                 ).write_csv(tmp_path / "members.csv")
    spec = typed_folder(tmp_path)
    spec["arms"][2]["with"]["relations"] = [
        {"kind": "link", "path": "members.csv", "source": "station", "target": "artist",
         "value": "plays"}]
    plan = load_plan(write(tmp_path, spec))
    report = index_plan(plan)
    stats = json.dumps(report, default=str)
    assert '"between_types": {"artist\\u2013station": 3}' in stats
    assert '"rows_not_in_catalog": 2' in stats      # an unknown station, a self-link
    related = run(plan, "Jazz Cats").candidates["related"]
    assert [c.entity_id for c in related][:1] == ["st:metal"]   # no tag shared: the link
    assert {c.entity_type for c in related} == {"station"}


def test_a_link_relation_with_a_missing_column_names_the_field(tmp_path):
    from ltrr.errors import LtrrError
    from ltrr.runtime.batch import index_plan

    pl.DataFrame({"station": ["st:metal"], "artist": ["a3"]}).write_csv(
        tmp_path / "members.csv")
    spec = typed_folder(tmp_path)
    spec["arms"][2]["with"]["relations"] = [
        {"kind": "link", "path": "members.csv", "source": "station", "target": "member"}]
    with pytest.raises(LtrrError) as err:
        index_plan(load_plan(write(tmp_path, spec)))
    assert "member" in str(err.value) and "relations.0.target" in str(err.value)


@pytest.mark.parametrize("change, words", [
    (lambda s: s["slotters"][0]["with"].update(types={"station": ["radio"]}),
     "declare catalog.types first"),
    (lambda s: s.update(policy={"use": "epsilon_greedy", "budget": 12, "with": {
        "reward": {"type_weights": {"station": 2.0}}}}), "declare catalog.types first"),
    (lambda s: s.update(ranker={"use": "linear", "with": {"features": ["types"]}}),
     "needs a typed catalog"),
])
def test_type_settings_on_an_untyped_catalog_are_compile_errors(tmp_path, change, words):
    spec = typed_folder(tmp_path, catalog_types=False)
    for arm in spec["arms"]:
        arm.pop("types")
    change(spec)
    with pytest.raises(CompileError) as err:
        load_plan(write(tmp_path, spec))
    assert words in str(err.value) and "typed.yaml:" in str(err.value)

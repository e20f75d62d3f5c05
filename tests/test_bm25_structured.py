"""The bm25 arm's structured search — prior, slot filters and boosts, features — on real
Lucene over a tiny artist catalog (no mocks)."""

from __future__ import annotations

import hashlib
import json
import math

import polars as pl
import pytest
import yaml

from ltrr.compiler import compile_spec
from ltrr.errors import CompileError, StateError
from ltrr.runtime.batch import index_plan
from ltrr.runtime.indexing import fingerprint
from ltrr.runtime.pipeline import Pipeline
from ltrr.spec import load_spec_text
from ltrr.types import ArmRequest, Query, Slot

ARTISTS = [
    # id,    name,                  tags,                              popularity
    ("r1", "Stone Band", ["rock"], 0.2),
    ("r2", "Stone Band", ["rock"], 0.9),
    ("r3", "Stone Band", ["rock"], 0.5),
    ("fh1", "MC Solaar", ["french", "hip hop", "rap"], 0.6),
    ("fh2", "IAM", ["hip hop", "french"], 0.4),
    ("hh1", "Hip Hop Hooray Crew", ["hip hop"], 0.9),
    ("hh2", "Nas", ["hip hop", "rap", "east coast"], 0.95),
    ("fr1", "French Kiss", ["french", "pop"], 0.8),
    ("fr2", "Edith Piaf", ["french", "chanson"], 0.7),
    ("split", "Split Tags", ["hip", "hop", "french"], 0.3),   # "hip hop" only across values
    ("nf", "French Connection", ["disco"], 0.85),              # "french" in the name only
    ("syn", "Literal", ["name:x", "ac/dc"], 0.1),
    ("rb", "Rockabilly Kings", ["rockabilly"], 0.3),
    ("neg", "Nobody", [], None),
]
FIELDS = {"name": 3.0, "tag_text": 1.0}
FILTER = {"field": "tags", "mode": "filter", "remove_from_text": True}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bm25s")
    pl.DataFrame({
        "artist_id": [a[0] for a in ARTISTS],
        "name": [a[1] for a in ARTISTS],
        "tags": [a[2] for a in ARTISTS],
        "tag_text": [", ".join(a[2]) for a in ARTISTS],
        "popularity": [a[3] for a in ARTISTS],
        "signed": [1.0, -1.0] + [0.0] * (len(ARTISTS) - 2),
    }).write_parquet(folder / "artists.parquet")
    return folder


def config_key(lexical: dict, slotter: bool = False) -> str:
    blob = json.dumps([lexical, slotter], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def spec_text(folder, lexical: dict, slotter: bool = False) -> str:
    data = {
        "name": "t",
        "state_dir": str(folder / f"state-{config_key(lexical, slotter)}"),
        "catalog": {"path": str(folder / "artists.parquet"), "id": "artist_id", "title": "name"},
        "arms": [{"id": "lexical", "use": "bm25", "with": lexical}],
        "policy": {"budget": 20, "with": {"allocation": {"lexical": 20}}},
        "output": {"k": 20},
        "log": {"decisions": False},
    }
    if slotter:
        data["slotters"] = [{"id": "understand", "use": "dictionary",
                             "with": {"slots": {"tag": {"column": "tags"}},
                                      "fuzzy_threshold": 100}}]
    return yaml.safe_dump(data, sort_keys=False)


def plan_for(folder, lexical: dict, slotter: bool = False):
    text = spec_text(folder, lexical, slotter)
    return compile_spec(load_spec_text(text, folder / f"spec-{config_key(lexical, slotter)}.yaml"))


@pytest.fixture(scope="module")
def pipeline(folder):
    """An opened pipeline per lexical config (indexed once each), closed at the end."""
    opened: dict[str, Pipeline] = {}

    def get(lexical: dict, slotter: bool = False) -> Pipeline:
        key = json.dumps([lexical, slotter], sort_keys=True)
        if key not in opened:
            plan = plan_for(folder, lexical, slotter)
            index_plan(plan)
            opened[key] = Pipeline(plan, log_decisions=False)
        return opened[key]

    yield get
    for p in opened.values():
        p.close()


@pytest.fixture(scope="module")
def arm(pipeline):
    def get(**params):
        return pipeline({"fields": FIELDS, **params}).components["lexical"]
    return get


def tag(value: str, text: str, score: float = 1.0, name: str = "tag") -> Slot:
    start = text.lower().index(value.lower())
    return Slot(name, value, start, start + len(value), score)


def search(arm, text: str, slots=(), k: int = 20):
    return arm.retrieve_batch([ArmRequest(Query("q", text), k, list(slots))])[0]


def ids(cands):
    return [c.entity_id for c in cands]


# --------------------------------------------------------------------------- prior

def test_prior_reorders_equal_text_matches_by_popularity(arm):
    plain = search(arm(), "stone band")
    assert ids(plain) == ["r1", "r2", "r3"]                  # equal scores: id order
    assert len({c.score for c in plain}) == 1 and plain[0].features is None
    ranked = search(arm(prior={"column": "popularity", "weight": 1.0, "transform": "none"}),
                    "stone band")
    assert ids(ranked) == ["r2", "r3", "r1"]
    for c in ranked:
        assert c.features["bm25"] == pytest.approx(plain[0].score, rel=1e-6)
        assert c.score == pytest.approx(c.features["bm25"] + c.features["prior"], rel=1e-6)
    assert [c.features["prior"] for c in ranked] == pytest.approx([0.9, 0.5, 0.2])


@pytest.mark.parametrize("transform,f", [
    ("none", lambda x: x), ("log1p", math.log1p), ("linear", lambda x: x / 0.95)])
def test_prior_transforms_and_weight(arm, transform, f):
    a = arm(prior={"column": "popularity", "weight": 2.5, "transform": transform})
    plain = {c.entity_id: c.score for c in search(arm(), "french hip hop")}
    got = search(a, "french hip hop")
    assert {c.entity_id for c in got} == set(plain)
    pop = {x[0]: x[3] for x in ARTISTS}
    for c in got:
        assert c.features["prior"] == pytest.approx(f(pop[c.entity_id]), rel=1e-6)
        assert c.score == pytest.approx(plain[c.entity_id] + 2.5 * f(pop[c.entity_id]),
                                        rel=1e-5)
    assert [c.score for c in got] == sorted((c.score for c in got), reverse=True)


def test_prior_weight_zero_is_plain_bm25(arm):
    zero = search(arm(prior={"column": "popularity", "weight": 0.0}), "french hip hop")
    plain = search(arm(), "french hip hop")
    assert [(c.entity_id, c.score) for c in zero] == [(c.entity_id, c.score) for c in plain]
    # the prior is still reported as a feature (log1p, the default transform), weight 0
    pop = {x[0]: x[3] for x in ARTISTS}
    assert all(c.features == {"bm25": c.score,
                              "prior": pytest.approx(math.log1p(pop[c.entity_id]))}
               for c in zero)


def test_missing_prior_value_counts_as_zero(arm):
    a = arm(prior={"column": "popularity", "weight": 1.0, "transform": "none"})
    [nobody] = search(a, "nobody")
    assert nobody.features["prior"] == 0.0
    assert nobody.score == pytest.approx(nobody.features["bm25"])


# --------------------------------------------------------------------------- slots

def test_tag_filter_returns_only_tagged_artists(arm):
    a = arm(slots={"tag": {**FILTER, "remove_from_text": False}}, fill=False)
    got = search(a, "french", [tag("french", "french")])
    assert set(ids(got)) == {"fh1", "fh2", "fr1", "fr2", "split"}   # not nf: name only
    assert all(c.features["slot_matches"] == 1 and c.features["relaxed"] == 0 for c in got)
    # two tag slots: both tags
    text = "french hip hop"
    both = search(a, text, [tag("french", text), tag("hip hop", text)])
    assert set(ids(both)) == {"fh1", "fh2"}                     # not split: "hip" | "hop"
    assert all(c.features["slot_matches"] == 2 for c in both)


def test_words_no_entity_has_beside_a_filter_slot_keep_the_filtered_entities(arm):
    """Before, the free text left after removing the slot was a MUST clause: "🎸 rock",
    "rock zzqx" or "rock songs" (a word in no entity) found nothing at all, even with the
    tag filter matching three artists. Now a filter selects and the text ranks."""
    a = arm(slots={"tag": FILTER}, fill=False)
    rock = set(ids(search(a, "rock", [tag("rock", "rock")])))
    assert rock == {"r1", "r2", "r3"}
    for text in ("\U0001F3B8 rock", "rock zzqx", "zzqx rock qqq"):
        assert set(ids(search(a, text, [tag("rock", text)]))) == rock, text
    # a word some filtered entities have still ranks them first
    text = "french hip hop"
    got = ids(search(arm(slots={"tag": FILTER}, fill=False), "rap " + text,
                     [tag("french", "rap " + text), tag("hip hop", "rap " + text)]))
    assert set(got) == {"fh1", "fh2"} and got[0] == "fh1"          # fh1 is tagged rap


def test_filter_fills_up_to_k_with_relaxed_hits_ranked_after(arm):
    a = arm(slots={"tag": {**FILTER, "remove_from_text": False}})
    got = search(a, "french", [tag("french", "french")])
    tagged = {"fh1", "fh2", "fr1", "fr2", "split"}
    assert set(ids(got)[:5]) == tagged
    assert ids(got)[5:] == ["nf"]                               # the rest, after
    assert [c.features["relaxed"] for c in got] == [0.0] * 5 + [1.0]
    assert got[-1].features["slot_matches"] == 0
    scores = [c.score for c in got]
    assert scores == sorted(scores, reverse=True) and len(set(scores[4:6])) == 2
    assert [c.rank for c in got] == list(range(1, 7))
    # k smaller than the filtered set: no fill
    assert ids(search(a, "french", [tag("french", "french")], k=3)) == ids(got)[:3]


def test_french_hip_hop_ranks_french_hip_hop_artists_first(arm):
    text = "french hip hop"
    slots = [tag("french", text), tag("hip hop", text)]
    plain = ids(search(arm(), text))
    assert set(plain[:2]) != {"fh1", "fh2"}                    # names win without slots
    a = arm(slots={"tag": FILTER}, prior={"column": "popularity", "weight": 1.0})
    got = search(a, text, slots)
    assert set(ids(got)[:2]) == {"fh1", "fh2"}
    # the relaxed rest: artists with one of the tags, none that has neither
    rest = ids(got)[2:]
    assert rest and {"r1", "r2", "r3", "syn", "rb", "nf"}.isdisjoint(rest)
    assert "split" in rest                                     # french only


def test_boost_moves_tagged_artists_up_without_removing_others(arm):
    text = "french hip hop"
    slots = [tag("french", text), tag("hip hop", text)]
    plain = search(arm(), text)
    boosted = search(arm(slots={"tag": {"field": "tags", "mode": "boost", "boost": 3.0}}),
                     text, slots)
    assert set(ids(boosted)) == set(ids(plain))
    for both in ("fh1", "fh2"):                       # both tags: up, into the top 3
        assert ids(boosted).index(both) < min(3, ids(plain).index(both))
    assert ids(boosted).index("nf") > ids(plain).index("nf")   # no tag: down
    assert all(c.features["relaxed"] == 0 for c in boosted)
    matches = {c.entity_id: c.features["slot_matches"] for c in boosted}
    assert matches["fh1"] == matches["fh2"] == 2 and matches["nf"] == 0
    assert matches["split"] == 1 and matches["hh1"] == 1


def test_remove_from_text_and_fuzzy_slots(arm):
    a = arm(slots={"tag": {**FILTER, "mode": "boost", "boost": 0.0}}, fill=False)
    text = "french"
    # the whole text is the slot: removed, and a zero-boost should clause alone matches
    # the tagged artists with score 0
    got = search(a, text, [tag("french", text)])
    assert set(ids(got)) == {"fh1", "fh2", "fr1", "fr2", "split"}
    assert {c.score for c in got} == {0.0}
    # a fuzzy slot (score < 1) keeps its span in the text: names match again
    fuzzy = search(a, text, [tag("french", text, score=0.9)])
    assert "nf" in ids(fuzzy) and fuzzy[0].score > 0


def test_min_score_and_yield_to(arm):
    a = arm(slots={"tag": {**FILTER, "min_score": 0.95, "yield_to": ["artist"]}}, fill=False)
    text = "french kiss"
    only_tag = search(a, text, [tag("french", text)])
    assert "fr1" in ids(only_tag) and "nf" not in ids(only_tag)
    assert ids(search(a, text, [tag("french", text, score=0.9)])) == ids(search(arm(), text))
    # an artist slot over the span: the tag slot yields, the plain query runs
    artist = Slot("artist", "French Kiss", 0, len(text), 1.0, entity_id="fr1")
    assert ids(search(a, text, [tag("french", text), artist])) == ids(search(arm(), text))


@pytest.mark.parametrize("value,expected", [
    ("name:x", {"syn"}),
    ('ac"dc', {"syn"}),             # analysed to the phrase "ac dc": matches "ac/dc"
    ("rock*", {"r1", "r2", "r3"}),  # no prefix query: not rockabilly
    ("*:*", None),                  # no searchable term: the slot is ignored
    ("tags:rock OR *:*", set()),
    ("\\", None),
])
def test_slot_values_are_never_lucene_syntax(arm, value, expected):
    a = arm(slots={"tag": {**FILTER, "remove_from_text": False}}, fill=False)
    text = "stone band literal rockabilly"
    got = set(ids(search(a, text, [Slot("tag", value, 0, 5, 1.0)])))
    assert got == (set(ids(search(arm(), text))) if expected is None else expected)


def test_no_slots_gives_identical_results(arm):
    structured = arm(slots={"tag": {**FILTER}, "artist": {"field": "name"}})
    plain = arm()
    for text in ["french hip hop", "stone band", "name:x OR *:*", "nothing matches", ""]:
        for slots in ([], [Slot("genre", "rock", 0, 1, 1.0)]):   # unconfigured slot names
            a = search(structured, text, slots)
            b = search(plain, text, slots)
            assert [(c.entity_id, c.rank, c.score) for c in a] == \
                [(c.entity_id, c.rank, c.score) for c in b]
            assert all(c.features == {"bm25": c.score, "slot_matches": 0.0, "relaxed": 0.0}
                       for c in a)


def test_batch_and_threads_equal_single(pipeline):
    text = "french hip hop"
    requests = [ArmRequest(Query(str(i), t), k, s) for i, (t, k, s) in enumerate([
        (text, 20, [tag("french", text), tag("hip hop", text)]),
        ("stone band", 2, []), ("french", 5, [tag("french", "french")]), ("", 5, [])])]
    for threads in (1, 3):
        a = pipeline({"fields": FIELDS, "threads": threads, "slots": {"tag": FILTER},
                      "prior": {"column": "popularity"}}).components["lexical"]
        batch = a.retrieve_batch(requests)
        single = [a.retrieve_batch([r])[0] for r in requests]
        assert [[(c.entity_id, c.score, c.features) for c in x] for x in batch] == \
            [[(c.entity_id, c.score, c.features) for c in x] for x in single]
        assert [len(x) for x in batch] == [7, 2, 5, 0]


def test_end_to_end_with_the_dictionary_slotter(pipeline):
    p = pipeline({"fields": FIELDS, "slots": {"tag": FILTER},
                  "prior": {"column": "popularity"}}, slotter=True)
    [d] = p.run_batch([Query("q", "french hip hop")])
    assert {(s.name, s.value) for s in d.slots} >= {("tag", "french"), ("tag", "hip hop")}
    assert {r.entity_id for r in d.ranking[:2]} == {"fh1", "fh2"}
    assert d.candidates["lexical"][0].features["slot_matches"] == 2


# --------------------------------------------------------------------------- flat, state

def test_flat_search_is_unchanged(arm, folder):
    from ltrr_plugins.arms.lucene import FieldedSearcher

    flat = arm(flat=True)
    assert flat.state_key() == {"fields": ["name", "tag_text"]}
    with FieldedSearcher(flat.ctx.state_dir / "lucene") as s:
        for text in ["french hip hop", "stone band rock", "name:x OR *:*"]:
            got = search(flat, text)
            assert [(c.entity_id, c.score) for c in got] == s.search(text, 20)
            assert all(c.features is None for c in got)


def test_stemmers_reach_the_index(arm):
    """`stemmers: {name: none}`: the name field keeps exact words ("bands" no longer finds
    "Stone Band"), the other fields keep Porter ("rapping" still finds the rap tag)."""
    assert "r1" in ids(search(arm(), "bands"))
    assert "r1" not in ids(search(arm(stemmers={"name": "none"}), "bands"))
    assert "hh2" in ids(search(arm(stemmers={"name": "none"}), "rapping"))


def test_state_key_covers_what_is_indexed_only(folder):
    def key(**params):
        plan = plan_for(folder, {"fields": FIELDS, **params})
        from ltrr.runtime.workspace import Workspace

        w = Workspace(plan)
        try:
            return w.instantiate(plan.node("lexical")).state_key()
        finally:
            w.close()

    base = key()
    assert base == {"fields": ["name", "tag_text"]}              # as before this feature
    prior = key(prior={"column": "popularity", "weight": 1.0, "transform": "log1p"})
    assert prior == key(prior={"column": "popularity", "weight": 3.0, "transform": "none"})
    assert prior != key(prior={"column": "signed"}) and prior != base
    slots = key(slots={"tag": {"field": "tags", "mode": "filter"}})
    assert slots == key(slots={"tag": {"field": "tags", "mode": "boost", "boost": 4.0}})
    assert slots == {"fields": ["name", "tag_text", "tags"], "value_gap": 1}
    assert key(slots={"tag": {"field": "name"}}) == {**base, "value_gap": 1}
    # a stemmer other than Porter (the default) is indexed; naming Porter changes nothing
    assert key(stemmers={"name": "porter"}) == base
    assert key(stemmers={"name": "none"}) == {**base, "stemmers": {"name": "none"}}


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("params,field,message", [
    ({"prior": {"column": "nosuch"}}, "with.prior.column", "no column 'nosuch'"),
    ({"prior": {"column": "name"}}, "with.prior.column", "not numeric"),
    ({"prior": {"column": "signed"}}, "with.prior.column", ">= 0"),
    ({"slots": {"tag": {"field": "genres"}}}, "with.slots.tag.field", "genres"),
])
def test_bad_columns_are_state_errors(folder, params, field, message):
    plan = plan_for(folder, {"fields": FIELDS, **params})
    with pytest.raises(StateError) as e:
        index_plan(plan)
    assert e.value.node == "lexical" and e.value.field == field
    assert message in e.value.message and e.value.hint


@pytest.mark.parametrize("params,path", [
    ({"fields": {"bad column": 1.0}}, "fields"),
    ({"fields": FIELDS, "slots": {"tag": {"field": "contents"}}}, "slots"),
    ({"fields": FIELDS, "slots": {"tag": {"field": "tags", "mode": "must"}}}, "mode"),
    ({"fields": FIELDS, "prior": {"column": "popularity", "weight": -1}}, "weight"),
    ({"fields": FIELDS, "stemmers": {"name": "snowball"}}, "stemmers"),
    ({"fields": FIELDS, "stemmers": {"tags": "none"}}, "stemmers.tags"),   # not indexed
])
def test_bad_params_are_compile_errors(folder, params, path):
    with pytest.raises(CompileError) as e:
        compile_spec(load_spec_text(spec_text(folder, params), folder / "bad.yaml"))
    assert path in str(e.value) and "lexical" in str(e.value)


def test_stale_index_after_adding_a_prior(folder):
    from ltrr.runtime.workspace import Workspace

    plain, with_prior = (plan_for(folder, {"fields": FIELDS, **extra}) for extra in (
        {}, {"prior": {"column": "popularity"}}))
    w1, w2 = Workspace(plain), Workspace(with_prior)
    try:
        assert fingerprint(w1.instantiate(plain.node("lexical"))) != fingerprint(
            w2.instantiate(with_prior.node("lexical")))
    finally:
        w1.close()
        w2.close()


def test_warm_searches_the_slot_and_prior_path_and_changes_no_result(arm, monkeypatch):
    """``warm`` (run by the pipeline before its first query) sends catalog rows through
    the structured search — phrases on the slot field, the prior — so the JVM has loaded
    and compiled that path before a deadline counts; it leaves results unchanged."""
    a = arm(prior={"column": "popularity", "weight": 1.0}, slots={"tag": FILTER})
    text = "french hip hop"
    before = search(a, text, [tag("hip hop", text)])
    seen = []
    real = a._searcher.search_structured

    def spy(text, k, fields=None, **kw):
        seen.append(kw)
        return real(text, k, fields, **kw)

    monkeypatch.setattr(a._searcher, "search_structured", spy)
    a.warm()
    monkeypatch.undo()
    assert any(p.field == "tags" for kw in seen for p in kw.get("phrases", ())), seen
    assert seen and all(kw.get("prior") is not None for kw in seen)
    assert search(a, text, [tag("hip hop", text)]) == before

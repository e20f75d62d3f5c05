"""The ``memory`` arm on a tiny catalog: cold start, learning, decay, persistence, CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ltrr.compiler import load_plan
from ltrr.errors import StateError
from ltrr.feedback.interactions import EVENT_COLUMNS
from ltrr.runtime.batch import index_plan
from ltrr.runtime.pipeline import Pipeline
from ltrr.runtime.workspace import Workspace
from ltrr.types import ArmRequest, Query
from ltrr_plugins.arms.memory import MemoryArm, MemoryParams, name_keys, near_key

DAY = 86400.0
T0 = 1_700_000_000.0

CATALOG = {
    "id": [str(i) for i in range(1, 13)],
    "name": ["The Beatles", "Beatles Tribute Band", "AC/DC", "Metallica", "Iron Maiden", "IAM",
             "MC Solaar", "Nick Cave & the Bad Seeds", "Beyoncé", "Obscure Rock", "Nick Cave",
             "The Rock"],
    "tags": [["rock", "british", "60s"], ["rock", "covers"], ["hard rock", "rock"],
             ["heavy metal", "thrash metal", "rock"], ["heavy metal", "nwobhm"],
             ["french hip hop", "hip hop"], ["french hip hop", "hip hop", "french"],
             ["post-punk", "rock"], ["pop", "rnb"], ["rock"], ["singer-songwriter"],
             ["wrestling"]],
    "pop": [0.9, 0.2, 0.8, 0.95, 0.7, 0.6, 0.5, 0.6, 0.85, 0.05, 0.4, 0.3],
}

# a music catalog: music's own stopwords, as pipelines/music.yaml lists them
MEMORY = ("{name: {column: name}, attributes: [{column: tags, weight: 0.6, top_n: 50}], "
          "popularity: pop, prior_strength: 3, half_life_days: 30, stopwords: [the, a, an, "
          "and, of, by, feat, ft, featuring, music, songs, song, band, bands, artist, artists]}")


def write_spec(tmp_path: Path, memory: str = MEMORY) -> Path:
    pl.DataFrame(CATALOG).write_parquet(tmp_path / "c.parquet")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: t\ncatalog: {{path: c.parquet, title: name}}\n"
                    f"arms: [{{id: mem, use: memory, with: {memory}}}]\n"
                    "policy: {budget: 10, with: {allocation: {mem: 10}}}\noutput: {k: 10}\n")
    return spec


@pytest.fixture()
def spec(tmp_path) -> Path:
    path = write_spec(tmp_path)
    index_plan(load_plan(path))
    return path


def open_arm(spec: Path) -> tuple[Workspace, MemoryArm]:
    ws = Workspace(load_plan(spec))
    return ws, ws.opened("mem")


@pytest.fixture()
def arm(spec):
    ws, a = open_arm(spec)
    yield a
    ws.close()


def ids(arm: MemoryArm, text: str, k: int = 10) -> list[str]:
    return [e for e, _, _ in arm.scores(text, k)[0]]


def score(arm: MemoryArm, text: str, entity: str) -> float:
    return dict((e, s) for e, s, _ in arm.scores(text)[0]).get(entity, 0.0)


def events(rows: list[tuple], start: int = 0) -> pl.DataFrame:
    """(query, entity_id, weight, timestamp) rows → an interactions frame."""
    return pl.DataFrame(
        [{"event_id": f"e{start + i}", "request_id": None, "user_id": "u", "query": q,
          "entity_id": e, "type": "click" if w > 0 else "skip", "weight": w, "position": 1,
          "timestamp": t} for i, (q, e, w, t) in enumerate(rows)],
        schema={"event_id": pl.String, "request_id": pl.String, "user_id": pl.String,
                "query": pl.String, "entity_id": pl.String, "type": pl.String,
                "weight": pl.Float64, "position": pl.Int32, "timestamp": pl.Float64},
    ).select(EVENT_COLUMNS)


# --- keys ---------------------------------------------------------------------------------

def test_near_key_drops_stopwords_and_sorts():
    stop = frozenset({"the", "music"})
    assert near_key("the beatles", stop) == near_key("beatles", stop) == "beatles"
    assert near_key("hip hop french", stop) == near_key("french hip hop", stop)
    assert near_key("heavy metal music", stop) == "heavy metal"
    assert near_key("the the", stop) == "the the"      # only stopwords: keep them


def test_name_variants():
    src = MemoryParams.model_validate({"name": {"column": "name"}}).name
    from ltrr_plugins.arms.memory.keys import _separator_regex

    keys = lambda raw: {k: kind for k, kind, _ in name_keys(raw, src, _separator_regex(  # noqa
        src.separators))}
    assert keys("The Beatles") == {"the beatles": "name", "beatles": "variant"}
    assert keys("AC/DC") == {"ac dc": "name", "acdc": "variant"}
    assert keys("Beyoncé") == {"beyonce": "name"}
    assert keys("Jay-Z feat. Rihanna") == {"jay z feat rihanna": "name",
                                           "jay z": "part", "jayz": "part",
                                           "jayz feat rihanna": "variant"}


# --- cold start ---------------------------------------------------------------------------

def test_cold_start_exact_names_and_variants(arm):
    assert ids(arm, "Metallica")[0] == "4"
    assert ids(arm, "beyonce")[0] == "9"          # accents folded
    assert ids(arm, "AC/DC")[0] == "3"
    assert ids(arm, "acdc")[0] == "3"             # compact variant
    assert ids(arm, "beatles")[0] == "1"          # without the leading "the"
    assert ids(arm, "nick cave")[:2] == ["11", "8"]   # exact name before the name part
    assert arm.scores("Metallica")[2] == 0        # exact-key match


def test_tag_query_returns_popular_tagged_entities_first(arm):
    got = ids(arm, "rock")
    assert set(got) == {"1", "2", "3", "4", "8", "10", "12"}   # 12: variant of The Rock
    # The Beatles: rock at rank 1, pop .9; Metallica: rank 3, pop .95; Obscure Rock last
    assert got[0] == "1" and got[-1] == "10"
    assert got.index("4") < got.index("2")
    # the variant is scaled by The Rock's popularity: below the popular rock bands
    assert got.index("12") > got.index("8")
    s = dict((e, sc) for e, sc, _ in arm.scores("rock")[0])
    assert s["1"] == pytest.approx(0.6 * 0.9 / 0.95, rel=1e-5)         # pop / max pop
    assert s["4"] == pytest.approx(0.6 * 1.0 / (1 + 0.15 * 2), rel=1e-5)


def test_build_stats_report_pair_counts(spec):
    manifest = json.loads((spec.parent / ".ltrr/t/mem/manifest.json").read_text())
    stats = manifest["stats"]
    assert stats["pairs"] == pl.read_parquet(spec.parent / ".ltrr/t/mem/predictions.parquet"
                                             ).height
    assert stats["pairs_name"] == 12 and stats["pairs_tags"] > 0 and stats["pairs_variant"] > 0


def test_near_duplicate_and_fuzzy_lookup(arm):
    assert set(ids(arm, "hip hop french")) == {"6", "7"}
    assert arm.scores("hip hop french")[2] == 1
    assert ids(arm, "beatles the")[0] == "1"
    # near key "rock": the exact key "rock" exists, so "the rock" (The Rock, 1.0) is not mixed in
    assert ids(arm, "rock music") == ids(arm, "rock") and ids(arm, "the rock")[0] == "12"
    got, _, match = arm.scores("metalica")
    assert got[0][0] == "4" and match == 2 and got[0][1] < 1.0   # scaled by the similarity
    assert ids(arm, "zzzzzz") == []


def test_fuzzy_can_be_disabled(tmp_path):
    spec = write_spec(tmp_path, MEMORY[:-1] + ", fuzzy_threshold: 100}")
    index_plan(load_plan(spec))
    ws, arm = open_arm(spec)
    try:
        assert ids(arm, "metalica") == [] and ids(arm, "metallica")[0] == "4"
    finally:
        ws.close()


def test_retrieve_batch_ranks_and_features(arm):
    out = arm.retrieve_batch([ArmRequest(Query("r1", "rock"), 3),
                              ArmRequest(Query("r2", "nothing known"), 5)])
    assert [c.rank for c in out[0]] == [1, 2, 3] and out[1] == []
    assert all(c.arm == "mem" for c in out[0])
    assert out[0][0].features == {"memory_prior": pytest.approx(out[0][0].score),
                                  "memory_evidence": 0.0, "memory_match": 0.0}


# --- learning -----------------------------------------------------------------------------

def test_clicks_move_an_entity_to_rank_one_and_predictions_fade(arm):
    before = score(arm, "rock", "1")
    assert ids(arm, "rock")[0] == "1"
    seen = [before]
    for i in range(6):
        stats = arm.learn(events([("Rock", "10", 1.0, T0 + i)], start=i))
        assert stats["learned"] == 1
        seen.append(score(arm, "rock", "1"))
    assert ids(arm, "rock")[0] == "10"
    assert all(a > b for a, b in zip(seen, seen[1:]))          # the prediction fades ...
    # ... exactly as k·p / (n + k), n = decayed evidence
    n = sum(math.exp(-(5 - i) * math.log(2) / (30 * DAY)) for i in range(6))
    assert seen[-1] == pytest.approx(3 * before / (n + 3), rel=1e-6)
    assert arm.scores("rock")[1] == pytest.approx(n, rel=1e-9)


def test_formula_with_decay(arm):
    p = score(arm, "metallica", "5")      # Iron Maiden: no prediction for "metallica"
    assert p == 0.0
    pm = score(arm, "metallica", "4")
    arm.learn(events([("metallica", "5", 1.0, T0), ("other query", "1", 1.0, T0 + 30 * DAY)]))
    g = 0.5                               # the click is one half-life older than the latest event
    assert score(arm, "metallica", "5") == pytest.approx(g / (g + 3), rel=1e-6)
    assert score(arm, "metallica", "4") == pytest.approx(3 * pm / (g + 3), rel=1e-6)


def test_older_events_count_less(arm):
    arm.learn(events([("road trip", "1", 1.0, T0 - 90 * DAY), ("road trip", "2", 1.0, T0)]))
    assert ids(arm, "road trip") == ["2", "1"]
    recent, old = score(arm, "road trip", "2"), score(arm, "road trip", "1")
    assert old / recent == pytest.approx(2 ** -3, rel=1e-6)      # three half-lives apart


def test_skips_lower_a_score(arm):
    before = score(arm, "metallica", "4")
    arm.learn(events([("metallica", "4", -0.5, T0)]))
    after = score(arm, "metallica", "4")
    assert 0 < after < before
    assert after == pytest.approx((-0.5 + 3 * before) / (0.5 + 3), rel=1e-6)
    arm.learn(events([("metallica", "4", -0.5, T0 + i) for i in range(1, 40)], start=1))
    assert "4" not in ids(arm, "metallica")     # enough skips push it to <= 0: not returned


def test_incremental_learning_equals_batch(tmp_path):
    rows = [("rock", "10", 1.0, T0 + 5 * DAY), ("Rock", "2", 1.0, T0),
            ("rock", "1", -0.5, T0 + 40 * DAY), ("the beatles", "2", 2.0, T0 + DAY),
            ("heavy metal", "5", 1.0, T0 + 70 * DAY), ("rock", "10", 1.0, T0 + 10 * DAY),
            ("heavy metal", "4", 1.0, T0 + 3 * DAY), ("beatles", "1", 1.0, T0 + 80 * DAY)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    specs = [write_spec(tmp_path / d) for d in ("a", "b")]
    arms = []
    for s in specs:
        index_plan(load_plan(s))
        arms.append(open_arm(s))
    (ws1, one), (ws2, many) = arms
    try:
        one.learn(events(rows))
        for i, chunk in enumerate((rows[:3], rows[3:4], rows[4:])):
            many.learn(events(chunk, start=10 * i))
        for q in ("rock", "the beatles", "beatles", "heavy metal", "metallica"):
            a, b = one.scores(q), many.scores(q)
            assert [e for e, _, _ in a[0]] == [e for e, _, _ in b[0]]
            assert [s for _, s, _ in a[0]] == pytest.approx([s for _, s, _ in b[0]], rel=1e-9)
            assert a[1] == pytest.approx(b[1], rel=1e-9)
    finally:
        ws1.close()
        ws2.close()


def test_learned_keys_have_near_duplicates(arm):
    arm.learn(events([("French Hip-Hop", "7", 1.0, T0 + i) for i in range(5)]))
    assert ids(arm, "hip hop french")[0] == "7"
    assert ids(arm, "french hip hop")[0] == "7"      # normalised to the same exact key
    arm.learn(events([("the beatles", "2", 1.0, T0 + i) for i in range(8)], start=10))
    assert ids(arm, "The Beatles!")[0] == "2"
    assert ids(arm, "beatles the")[0] == "2"       # unknown key: its near-duplicate's evidence
    # a known key keeps its own answer: "beatles" (a variant of The Beatles) does not borrow
    # what users of "the beatles" did (as "the rock", a name, must not borrow from "rock")
    assert ids(arm, "beatles")[0] == "1" and arm.scores("beatles")[1] == 0.0


def test_events_without_query_or_known_entity_are_ignored_and_reported(arm):
    stats = arm.learn(events([(None, "1", 1.0, T0), ("  !! ", "1", 1.0, T0),
                              ("rock", "nope", 1.0, T0), ("rock", "1", 0.0, T0),
                              ("rock", "2", 1.0, T0)]))
    assert stats["interactions"] == 5 and stats["learned"] == 1
    assert stats["ignored_no_query"] == 2 and stats["ignored_unknown_entity"] == 1
    assert stats["ignored_zero_weight"] == 1 and stats["pairs"] == 1


def test_state_survives_reopening_and_a_forced_reindex(spec):
    ws, arm = open_arm(spec)
    arm.learn(events([("rock", "10", 1.0, T0 + i) for i in range(6)]))
    learned = arm.scores("rock")
    ws.close()
    index_plan(load_plan(spec), force=True)
    assert (spec.parent / ".ltrr/t/mem.learned/memory.parquet").exists()
    ws, again = open_arm(spec)
    try:
        assert again.scores("rock")[0][0][0] == "10"
        assert [s for _, s, _ in again.scores("rock")[0]] == pytest.approx(
            [s for _, s, _ in learned[0]], rel=1e-6)
        again.learn(events([("rock", "10", 1.0, T0 + 10)], start=99))  # keeps accumulating
        assert again.scores("rock")[1] > learned[1]
    finally:
        ws.close()


def test_learning_needs_no_index_yet(tmp_path):
    spec = write_spec(tmp_path)                  # `ltrr feedback` before `ltrr index`
    ws, arm = open_arm(spec)
    try:
        assert not arm.has_predictions and ids(arm, "metallica") == []
        arm.learn(events([("metallica", "4", 1.0, T0)]))
        assert ids(arm, "metallica") == ["4"]
    finally:
        ws.close()
    index_plan(load_plan(spec))
    ws, arm = open_arm(spec)
    try:
        assert arm.scores("metallica")[1] == pytest.approx(1.0)
    finally:
        ws.close()


def test_corrupt_learned_state_is_a_state_error(spec):
    path = spec.parent / ".ltrr/t/mem.learned/memory.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    with pytest.raises(StateError) as err:
        open_arm(spec)
    assert err.value.node == "mem" and "move" in err.value.hint


@pytest.mark.parametrize("memory,field,message", [
    ("{name: {column: title}}", "with.name.column", "no column 'title'"),
    ("{name: {column: pop}}", "with.name.column", "not text"),
    ("{attributes: [{column: pop}]}", "with.attributes.0.column", "not text"),
    ("{name: {column: name}, popularity: name}", "with.popularity", "not numeric"),
])
def test_bad_columns_name_the_node_and_field(tmp_path, memory, field, message):
    spec = write_spec(tmp_path, memory)
    with pytest.raises(StateError) as err:
        index_plan(load_plan(spec))
    assert err.value.node == "mem" and err.value.field == field
    assert message in err.value.message and err.value.hint


def test_pipeline_refuses_to_run_without_an_index(tmp_path):
    spec = write_spec(tmp_path)
    with pytest.raises(StateError, match="no index built yet"):
        Pipeline(load_plan(spec), log_decisions=False)


# --- end to end ---------------------------------------------------------------------------

def test_feedback_cli_teaches_the_memory_arm(spec, tmp_path):
    ltrr = os.path.join(os.path.dirname(sys.executable), "ltrr")

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([ltrr, *args], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done

    (tmp_path / "q.tsv").write_text("r1\trock\nr2\tRock\nr3\tmetallica\n")
    first = [json.loads(line) for line in
             run("run", str(spec), "--queries", "q.tsv", "--format", "jsonl").stdout.splitlines()]
    assert first[0]["results"][0]["id"] == "1"
    ev = [{"event_id": f"c{i}", "request_id": f"r{1 + i % 2}", "entity_id": "10",
           "type": "click", "position": 6, "timestamp": T0 + i} for i in range(6)]
    ev.append({"event_id": "s1", "request_id": "r3", "entity_id": "4", "type": "skip",
               "timestamp": T0})
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    out = run("feedback", str(spec), "e.jsonl").stdout
    assert "7 new of 7 events logged" in out and "mem: interactions=7, learned=7" in out
    after = [json.loads(line) for line in run("run", str(spec), "-q", "rock", "-q", "metallica",
                                              "--format", "jsonl", "--no-log").stdout.splitlines()]
    assert after[0]["results"][0]["id"] == "10"
    assert after[1]["results"][0]["id"] == "4"
    ws, arm = open_arm(spec)                      # the skip lowered Metallica's memory score
    try:
        assert 0.5 < score(arm, "metallica", "4") < 1.0
    finally:
        ws.close()
    assert "0 new of 7" in run("feedback", str(spec), "e.jsonl").stdout   # replay: nothing


# --- bad values never poison the memory (issue 10, item 4) --------------------------------

def _learned_pairs(spec: Path) -> pl.DataFrame:
    from ltrr_plugins.arms.memory.store import read_pairs

    return read_pairs(spec.parent / ".ltrr/t/mem.learned")[0]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e300, -1e300, -5.0])
def test_a_bad_timestamp_is_ignored_and_never_poisons_the_memory(spec, bad):
    ws, arm = open_arm(spec)
    try:
        arm.learn(events([("rock", "10", 1.0, T0), ("metallica", "4", 1.0, T0)]))
        before = arm.scores("metallica")
        stats = arm.learn(events([("rock", "10", 1.0, bad), ("rock", "1", 1.0, T0 + 1)],
                                 start=10))
        assert stats["learned"] == 1 and stats["ignored_bad_timestamp"] == 1
        # the other keys keep their evidence (a "now" of inf would decay it to nothing)
        assert arm.scores("metallica")[1] == pytest.approx(before[1], rel=1e-6)
        assert ids(arm, "metallica")[0] == "4"
        rock = arm.scores("rock")
        assert rock[0] and all(math.isfinite(s) for _, s, _ in rock[0])
        pairs = _learned_pairs(spec)
        assert pairs.select(pl.col("w", "a", "t").is_finite().all()).row(0) == (True,) * 3
    finally:
        ws.close()


def test_bad_weights_are_ignored(arm):
    stats = arm.learn(events([("rock", "10", math.inf, T0), ("rock", "10", math.nan, T0),
                              ("rock", "1", 1.0, T0)]))
    assert stats["learned"] == 1 and stats["ignored_no_weight"] == 2
    assert all(math.isfinite(s) for _, s, _ in arm.scores("rock")[0])


def test_poisoned_learned_state_is_repaired_on_open_and_named(spec, caplog):
    ws, arm = open_arm(spec)
    arm.learn(events([("rock", "10", 1.0, T0), ("metallica", "4", 1.0, T0)]))
    ws.close()
    path = spec.parent / ".ltrr/t/mem.learned/memory.parquet"
    pairs = pl.read_parquet(path)               # as the unvalidated code once wrote it
    poisoned = pairs.with_columns(
        pl.when(pl.col("key") == "rock").then(math.inf).otherwise(pl.col("t")).alias("t"),
        pl.when(pl.col("key") == "rock").then(math.nan).otherwise(pl.col("w")).alias("w"))
    poisoned.write_parquet(path, metadata={"ltrr_memory_format": "1"})
    with caplog.at_level("WARNING"):
        ws, arm = open_arm(spec)
    try:
        assert ids(arm, "metallica")[0] == "4"                 # not decayed to nothing
        assert arm.scores("metallica")[1] == pytest.approx(1.0)
        assert str(path) in caplog.text and "ltrr train" in caplog.text
    finally:
        ws.close()


def test_evidence_says_how_the_memory_knows_a_query_before_any_allocation(arm):
    from ltrr.types import PolicyContext, Query

    def ev(text):
        (out,) = arm.evidence_batch([PolicyContext(Query("r", text), [])])
        return out

    assert ev("Metallica") == {"match": "exact", "evidence": 0.0,
                               "top": pytest.approx(arm.scores("Metallica", 1)[0][0][1],
                                                    abs=1e-4)}
    assert ev("qqqq zzzz xxxx")["match"] == "none" and ev("qqqq zzzz xxxx")["top"] == 0.0
    for i in range(3):
        arm.learn(events([("my gym mix", "10", 1.0, T0 + i)], start=i))
    learned = ev("my gym mix")
    assert learned["match"] == "exact" and learned["evidence"] > 1.0 and learned["top"] > 0


def test_a_learn_writes_what_it_changed_and_deltas_are_folded_into_the_base(spec):
    """The learned state is not rewritten whole on every learn: a delta of the keys a
    learn touched, folded into the base once the deltas hold as many rows as it."""
    from ltrr_plugins.arms.memory.store import DELTAS, read_pairs

    learned = spec.parent / ".ltrr/t/mem.learned"
    ws, arm = open_arm(spec)
    try:
        arm.learn(events([(f"query {i}", "10", 1.0, T0) for i in range(40)]))  # the base
        base = (learned / "memory.parquet").stat().st_mtime_ns
        for n in range(5):                   # small learns: deltas, the base untouched
            arm.learn(events([(f"query {n}", "4", 1.0, T0 + 1 + n)], start=100 + n))
        assert len(list((learned / DELTAS).glob("delta-*.parquet"))) == 5
        assert (learned / "memory.parquet").stat().st_mtime_ns == base
        pairs, _, _, rows = read_pairs(learned)
        assert rows == 10 and pairs.height == 45           # query 0-4: two pairs each
        for n in range(40):                  # many touched keys: folded into a new base
            arm.learn(events([(f"query {n}", "7", 1.0, T0 + 10)], start=200 + n))
        assert len(list((learned / DELTAS).glob("delta-*.parquet"))) < 40
        assert (learned / "memory.parquet").stat().st_mtime_ns != base
        before = {q: arm.scores(q) for q in ("query 0", "query 3", "query 39")}
    finally:
        ws.close()
    ws, again = open_arm(spec)               # what is on disk is what was learned
    try:
        assert read_pairs(learned)[0].height == 85
        for q, (hits, evidence, match) in before.items():
            got, got_evidence, got_match = again.scores(q)
            assert [e for e, _, _ in got] == [e for e, _, _ in hits] and hits
            assert [x for _, x, _ in got] == pytest.approx([x for _, x, _ in hits])
            assert (got_evidence, got_match) == (pytest.approx(evidence), match)
    finally:
        ws.close()

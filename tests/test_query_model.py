"""The music query model on the embedded Last.fm data, checked against the raw files."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from rapidfuzz.distance import DamerauLevenshtein

from ltrr.errors import RunError
from ltrr_plugins.simulators.query_model import (
    KEY_NEIGHBOURS, QUERY_TYPES, QueryModel, normalize, typo)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples/data/lastfm"


@pytest.fixture(scope="module")
def model() -> QueryModel:
    return QueryModel.from_dir(DATA)


@pytest.fixture(scope="module")
def artists() -> pl.DataFrame:
    return pl.read_parquet(DATA / "artists.parquet")


@pytest.fixture(scope="module")
def listeners_of() -> dict[str, set[str]]:
    plays = pl.read_parquet(DATA / "plays.parquet")
    out: dict[str, set[str]] = {}
    for user, artist in plays.select("user_id", "artist_id").iter_rows():
        out.setdefault(artist, set()).add(user)
    return out


def draw(model: QueryModel, qtype: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [model.sample(rng, qtype=qtype) for _ in range(n)]


def name_of(model: QueryModel, artist: str) -> str:
    return model.names[model.index[artist]]


def test_exact_is_the_name(model):
    for q in draw(model, "exact", 200):
        assert q.type == "exact"
        assert q.text.casefold() == name_of(model, q.target).casefold()


def test_misspelled_is_a_small_edit_of_the_name_and_no_other_name(model):
    names = {normalize(n) for n in model.names}
    for q in draw(model, "misspelled", 400):
        name = name_of(model, q.target).lower()
        assert 1 <= DamerauLevenshtein.distance(q.text, name) <= 2, (q.text, name)
        assert normalize(q.text) not in names, q.text     # not another artist's exact name
        assert q.text[0] == name[0]                      # first letters are typed right


def _typo_kind(text: str, name: str) -> str | None:
    """The kind of a single typo turning ``name`` into ``text``, or None if none fits."""
    if len(text) == len(name) - 1:
        return "delete"
    if len(text) == len(name) + 1:
        k = next((i for i, (a, b) in enumerate(zip(text, name)) if a != b), len(name))
        return "double" if text[k] == text[k - 1] or text[k] == text[k + 1] else None
    diff = [i for i, (a, b) in enumerate(zip(text, name)) if a != b]
    if len(diff) == 2 and diff[1] == diff[0] + 1 and text[diff[0]] == name[diff[1]] \
            and text[diff[1]] == name[diff[0]]:
        return "transpose"
    if len(diff) == 1 and text[diff[0]] in KEY_NEIGHBOURS.get(name[diff[0]], ""):
        return "substitute"
    return None


def test_single_typos_are_the_four_realistic_kinds(model):
    rng = np.random.default_rng(3)
    kinds = Counter()
    for name in model.names[:2000]:
        name = name.lower()
        if sum(ch in KEY_NEIGHBOURS for ch in name) < 4:
            continue
        text = typo(name, rng)
        kind = _typo_kind(text, name)
        assert kind is not None, (text, name)
        assert text[0] == name[0]
        kinds[kind] += 1
    assert set(kinds) == {"delete", "double", "transpose", "substitute"}, kinds
    assert min(kinds.values()) > 100, kinds


def test_partial_is_a_distinctive_part_or_prefix_of_the_name(model):
    norms = [normalize(n) for n in model.names]
    for q in draw(model, "partial", 150, seed=1):
        full = normalize(name_of(model, q.target))
        assert q.text != full and len(q.text) >= 3
        # a word span of the name found in few names, or a prefix few names start with
        counts = []
        if f" {q.text} " in f" {full} ":
            counts.append(sum(f" {q.text} " in f" {n} " for n in norms))
        if full.startswith(q.text):
            counts.append(sum(n.startswith(q.text) for n in norms))
        assert counts, (q.text, full)
        assert min(counts) <= model.max_partial_matches, (q.text, counts)


def test_tag_queries_use_a_specific_tag_of_the_target(model, artists):
    tag_count = Counter(t for ts in artists["tags"].to_list() for t in ts)
    for q in draw(model, "tag", 200, seed=2):
        tags = model.tags[model.index[q.target]]
        assert q.tags == (q.text,) and q.text in tags
        assert 2 <= tag_count[q.text] <= model.max_tag_artists
        assert q.text not in ("seen live", "favorites")


def test_like_names_a_real_co_listened_artist(model, listeners_of):
    for q in draw(model, "like", 200, seed=4):
        assert q.anchor and q.anchor != q.target
        anchor_name = name_of(model, q.anchor)
        assert anchor_name.casefold() in q.text.casefold()
        shared = listeners_of[q.anchor] & listeners_of[q.target]
        assert len(shared) >= model.min_co_listeners, (q.text, name_of(model, q.target))
        assert set(model.tags[model.index[q.anchor]]) & set(model.tags[model.index[q.target]])


def test_neighbours_are_ranked_by_co_listening(model, listeners_of):
    metallica = model.ids[model.names.index("Metallica")]
    top = model.neighbours(metallica, 5)
    assert len(top) == 5
    for artist, cosine, co in top:
        shared = len(listeners_of[artist] & listeners_of[metallica])
        assert co == shared
        expected = shared / np.sqrt(len(listeners_of[artist]) * len(listeners_of[metallica]))
        assert cosine == pytest.approx(expected)
    assert [c for _, c, _ in top] == sorted((c for _, c, _ in top), reverse=True)


def test_vague_combines_two_or_three_tags_with_filler(model, artists):
    sets: dict[str, set[int]] = {}
    for i, ts in enumerate(artists["tags"].to_list()):
        for t in ts:
            sets.setdefault(t, set()).add(i)
    for q in draw(model, "vague", 200, seed=5):
        assert 2 <= len(q.tags) <= 3
        assert set(q.tags) <= set(model.tags[model.index[q.target]])
        for t in q.tags:
            assert t in q.text
        assert len(set.intersection(*(sets[t] for t in q.tags))) <= model.max_tag_artists


def test_same_seed_same_queries_other_seed_other_queries(model):
    def run(seed: int, m: QueryModel):
        rng = np.random.default_rng(seed)
        return [m.sample(rng) for _ in range(300)]

    fresh = QueryModel.from_dir(DATA)      # caches empty: they must not change the draws
    assert run(7, model) == run(7, fresh)
    assert run(7, model) != run(8, model)


def test_sample_target_follows_the_users_play_counts(model):
    plays = pl.read_parquet(DATA / "plays.parquet").filter(pl.col("user_id") == "2")
    p = dict(zip(plays["artist_id"].to_list(), (plays["plays"] / plays["plays"].sum()).to_list()))
    rng = np.random.default_rng(11)
    n = 20000
    counts = Counter(model.sample_target("2", rng) for _ in range(n))
    assert set(counts) <= set(p)
    for artist, share in sorted(p.items(), key=lambda kv: -kv[1])[:10]:
        sigma = np.sqrt(share * (1 - share) / n)
        assert abs(counts[artist] / n - share) < 5 * sigma + 1e-3, artist
    tv = 0.5 * sum(abs(counts[a] / n - share) for a, share in p.items())
    assert tv < 0.03


def test_sample_type_follows_the_mix(model):
    rng = np.random.default_rng(5)
    mix = {"exact": 3.0, "like": 1.0}
    counts = Counter(model.sample_type(rng, mix) for _ in range(8000))
    assert set(counts) == {"exact", "like"}
    assert counts["exact"] / 8000 == pytest.approx(0.75, abs=0.02)


def test_sample_draws_types_the_target_can_carry(model):
    rng = np.random.default_rng(9)
    seen = Counter()
    for _ in range(600):
        q = model.sample(rng)
        assert q.type in model.feasible_types(q.target)
        assert q.user_id is not None and q.target in model._user_artists[q.user_id][0]
        seen[q.type] += 1
    assert set(seen) == set(QUERY_TYPES)


def test_bad_input_is_a_clear_error(model):
    rng = np.random.default_rng(0)
    with pytest.raises(RunError, match="unknown query type 'fuzzy'") as e:
        model.query(model.ids[0], "fuzzy", rng)
    assert "exact" in e.value.hint
    with pytest.raises(RunError, match="unknown artist"):
        model.query("no-such-artist", "exact", rng)
    with pytest.raises(RunError, match="unknown user"):
        model.sample_target("no-such-user", rng)
    with pytest.raises(RunError, match="no positive weight"):
        model.sample_type(rng, {"exact": 0})
    with pytest.raises(RunError, match="not found"):
        QueryModel.from_dir(ROOT / "no-such-folder")


def test_committed_query_set_is_what_the_script_makes():
    spec = importlib.util.spec_from_file_location(
        "make_music_queries", ROOT / "scripts/make_music_queries.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.make(200, 2011)
    folder = DATA / "queries"
    committed = [json.loads(line) for line in
                 (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows == committed, "run .venv/bin/python scripts/make_music_queries.py"
    assert Counter(r["type"] for r in rows) == {t: 200 for t in QUERY_TYPES}
    qrels = [line.split("\t") for line in (folder / "qrels.tsv").read_text().splitlines()]
    assert [(q, t) for q, _, t, _ in qrels] == [(r["id"], r["target"]) for r in rows]


def test_tuning_and_held_out_halves_share_no_user_and_no_wording():
    """The held-out protocol: sessions of the two halves come from disjoint users and
    disjoint like/vague wordings, both halves non-empty."""
    halves = {}
    for part in ("tuning", "held-out"):
        m = QueryModel.from_dir(DATA)
        m.split(part)
        rng = np.random.default_rng(5)
        qs = [m.sample(rng, mix={"like": 1.0, "vague": 1.0}) for _ in range(400)]
        wordings = set()
        for q in qs:
            if q.type == "like":
                name = next(n for n in (m.names[m.index[q.anchor]],
                                        m.names[m.index[q.anchor]].lower()) if n in q.text)
                wordings.add(q.text.replace(name, "{x}", 1))
            else:
                wordings.add(q.text.replace(" ".join(q.tags), "{t}", 1))
        halves[part] = ({q.user_id for q in qs}, wordings, set(m.session_users))
    (tu, tw, tall), (hu, hw, hall) = halves["tuning"], halves["held-out"]
    assert tu and hu and not tu & hu and not tall & hall
    assert len(tw) >= 4 and len(hw) >= 4 and not tw & hw, (tw, hw)
    everyone = QueryModel.from_dir(DATA)
    assert tall | hall == set(everyone.users)

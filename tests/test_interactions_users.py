"""The ``interactions`` user model: simulated users of any catalog with an interactions file
(here a small made-up film catalog, CSV interactions), queries from the catalog's columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import ltrr.registry
import ltrr_plugins.simulators.interactions as plugin
from ltrr.cli import main
from ltrr.compiler import load_plan
from ltrr.errors import RunError
from ltrr.simulate.engine import make_user_model, sample_sessions
from ltrr.text import normalize

WORDS = ("silent harbour crimson empire glass garden midnight river paper tiger frozen "
         "signal hollow crown velvet storm distant orbit broken compass").split()
GENRES = ("drama", "comedy", "thriller", "horror", "animation", "western", "noir", "musical")


def films(n: int = 80) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    titles, genres, tags = [], [], []
    for i in range(n):
        a, b = rng.choice(len(WORDS), 2, replace=False)
        titles.append(f"{WORDS[a].title()} {WORDS[b].title()} {i}")
        genres.append("|".join(GENRES[j] for j in rng.choice(len(GENRES), 2, replace=False)))
        tags.append([f"tag{int(t)}" for t in rng.choice(25, 3, replace=False)])
    return pl.DataFrame({"film": [f"f{i}" for i in range(n)], "title": titles,
                         "genres": genres, "tags": tags, "year": [1950 + i for i in range(n)]})


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("films")
    catalog = films()
    catalog.write_parquet(folder / "films.parquet")
    rng = np.random.default_rng(5)
    rows = []
    for u in range(40):           # users in 4 taste groups: co-occurrence has structure
        group = catalog["film"].to_list()[(u % 4) * 20:(u % 4) * 20 + 20]
        for f in rng.choice(group, 8, replace=False):
            rows.append({"uid": f"u{u}", "film": str(f), "stars": float(rng.integers(1, 6))})
    rows.append({"uid": "u0", "film": "not-in-catalog", "stars": 5.0})
    pl.DataFrame(rows).write_csv(folder / "ratings.csv")
    (folder / "spec.yaml").write_text(
        "name: films\n"
        "catalog: {path: films.parquet, id: film, title: title, lists: {genres: '|'}}\n"
        "arms:\n  - id: lexical\n    use: bm25\n    with: {fields: {title: 3.0, genres: 1.0}}\n"
        "policy: {use: static, budget: 20, with: {allocation: {lexical: 20}}}\n"
        "output: {k: 10}\n")
    return folder


@pytest.fixture(scope="module")
def registry():
    reg = ltrr.registry.default_registry()
    if "interactions" in reg.user_models:
        return reg
    return ltrr.registry.build_registry(extra=[("interactions", plugin)])


BASE = {"path": "ratings.csv", "user": "uid", "entity": "film", "weight": "stars"}


def model(folder, registry, **params):
    plan = load_plan(folder / "spec.yaml", registry)
    return make_user_model(plan, "interactions", {**BASE, **params}, registry)


def test_queries_come_from_the_catalogs_columns(folder, registry):
    m = model(folder, registry, min_weight=4, mix={"exact": 1, "misspelled": 1, "partial": 1,
                                                   "attribute": 1, "like": 1, "vague": 1})
    catalog = films()
    title = dict(zip(catalog["film"], catalog["title"]))
    values = {f: set(g.split("|")) | set(t)
              for f, g, t in zip(catalog["film"], catalog["genres"], catalog["tags"])}
    ratings = pl.read_csv(folder / "ratings.csv")
    liked = {(u, f) for u, f, s in ratings.iter_rows() if s >= 4}
    sessions = sample_sessions(m, 300, seed=1)
    seen = {s.type for s in sessions}
    assert seen == {"exact", "misspelled", "partial", "attribute", "like", "vague"}, seen
    for s in sessions:
        assert (s.user_id, s.target) in liked           # targets: what the user rated >= 4
        name = normalize(title[s.target])
        text = normalize(s.text)
        if s.type == "exact":
            assert text == name
        elif s.type == "misspelled":
            assert text != name and len(text) >= len(name) - 2
        elif s.type == "partial":
            assert text in name and text != name
        elif s.type == "attribute":
            assert s.text in values[s.target]
        elif s.type == "vague":
            assert sum(v in s.text for v in values[s.target]) >= 2
        elif s.type == "like":
            # names another film (from the like templates), never the target itself
            assert name not in text and any(normalize(title[f]) in text for f in title)
    assert "like" in m.query_types() and "tag" not in m.query_types()


def test_same_seed_same_sessions(folder, registry):
    a = sample_sessions(model(folder, registry), 50, seed=7)
    b = sample_sessions(model(folder, registry), 50, seed=7)
    assert a == b


@pytest.mark.parametrize("after_miss", [False, True])
def test_a_missed_target_is_played_only_if_asked(folder, registry, after_miss):
    m = model(folder, registry, play_after_miss=after_miss, eta=0.0)
    s = sample_sessions(m, 1, seed=2)[0]
    rng = np.random.default_rng(0)
    missed = m.engage(s, ["f-none-1", "f-none-2"], rng)
    assert [e.type for e in missed] == ["skip", "skip"] + (["play"] if after_miss else [])
    found = m.engage(s, ["f-none-1", s.target], rng)        # eta 0: every rank examined
    assert [e.type for e in found] == ["skip", "click", "play"]


@pytest.mark.parametrize("params,field,words", [
    ({"user": "userId"}, "with.user", "no column 'userId'"),
    ({"path": "nope.csv"}, "with.path", "not found"),
    ({"attributes": ["genre"]}, "with.attributes", "no column 'genre'"),
    ({"mix": {"tag": 1}}, "with.mix", "unknown query type 'tag'"),
    ({"like_templates": ["similar"]}, "with.like_templates", "{x}"),
    ({"min_weight": 9}, "with.entity", "no row"),
])
def test_bad_params_are_located(folder, registry, params, field, words):
    with pytest.raises(RunError) as e:
        model(folder, registry, **params)
    assert e.value.field == field and words in str(e.value), str(e.value)


def test_simulate_runs_on_the_catalog(folder, capsys):
    """`ltrr simulate --user-model interactions` end to end, from the CLI."""
    spec = folder / "spec.yaml"
    assert main(["index", str(spec)]) == 0
    out = folder / "sim"
    argv = ["simulate", str(spec), "--user-model", "interactions", "--sessions", "60",
            "--out", str(out), "--json"]
    for k, v in BASE.items():
        argv += ["--with", f"{k}={v}"]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["user_model"]["name"] == "interactions"
    sessions = pl.read_parquet(out / "sessions.parquet")
    assert sessions.height == 60 and set(sessions["type"]) <= set(plugin.TYPES.values())

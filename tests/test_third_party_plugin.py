"""The plugin API is enough for a third-party package: examples/ltrr-popularity.

The package is installed into a folder of its own by the fixtures below, put on the
path of the CLI — run as a subprocess, like a user would — which sees it through its
entry point exactly as it would see any package from PyPI. The unit checks import it from its
source folder and do not need it installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from ltrr.catalog import Catalog
from ltrr.components import ComponentContext, PlanView
from ltrr.errors import StateError
from ltrr.types import Candidate, Merged, Query

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / "examples" / "ltrr-popularity"
SPEC = "examples/music-popularity.yaml"              # relative to REPO, as a user types it
LTRR = str(Path(sys.executable).parent / "ltrr")     # the venv's console script
DIST = "ltrr-popularity"


# --- installing the package for a part of the module ---------------------------------------

def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The package installed (built from its folder, as from PyPI) into a folder of its
    own — never into the shared venv, where tests running beside these (pytest-xdist)
    would see it come and go."""
    site = tmp_path_factory.mktemp("popularity-site")
    _pip("install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site),
         str(PACKAGE_DIR))
    return site


@pytest.fixture
def without_plugin(monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)


@pytest.fixture
def with_plugin(plugin_site, monkeypatch):
    """The CLI subprocesses see the package on their path, found by its entry point."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(plugin_site), os.environ.get("PYTHONPATH")) if p))


def ltrr(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}      # keep `ltrr plugins` rows on one line
    env.pop("LTRR_DISABLE_PLUGINS", None)
    return subprocess.run([LTRR, *args], cwd=REPO, env=env, text=True, capture_output=True,
                          timeout=timeout)


# --- without the package ---------------------------------------------------------------------

def test_validate_names_missing_package_and_how_to_install(without_plugin):
    proc = ltrr("validate", SPEC)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert err.startswith("error: ")
    assert "'ltrr-popularity'" in err and "not installed" in err
    assert "(hint: pip install ltrr-popularity)" in err      # shlex.quote leaves it bare
    assert "requires" in err                        # points at the `requires:` entry
    assert "Traceback" not in err


def test_unknown_ranker_lists_registered_rankers(without_plugin, tmp_path):
    text = (REPO / SPEC).read_text(encoding="utf-8")
    assert "requires: [ltrr-popularity]\n" in text and "path: data/lastfm/artists.parquet" in text
    catalog = REPO / "examples" / "data" / "lastfm" / "artists.parquet"
    variant = (text.replace("requires: [ltrr-popularity]\n", "")
                   .replace("path: data/lastfm/artists.parquet", f"path: {catalog}"))
    spec = tmp_path / "no-requires.yaml"
    spec.write_text(variant, encoding="utf-8")

    proc = ltrr("validate", str(spec))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert "unknown ranker 'popularity'" in err
    assert "node 'ranker'" in err
    assert "registered rankers: " in err and "score" in err
    assert "ltrr plugins" in err
    assert "Traceback" not in err


# --- with the package installed --------------------------------------------------------------

def test_plugins_lists_popularity_from_its_package(with_plugin):
    proc = ltrr("plugins")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    row = next((r for r in rows if r[:2] == ["ranker", "popularity"]), None)
    assert row is not None, proc.stdout
    assert row[2] == DIST and row[3] == "0.1.0"
    assert "Blends the fused score with a catalog popularity column" in " ".join(row[4:])


def test_validate_passes_with_package(with_plugin):
    proc = ltrr("validate", SPEC)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: ") and "ranker popularity" in proc.stdout


def test_validate_checks_popularity_params(with_plugin, tmp_path):
    text = (REPO / SPEC).read_text(encoding="utf-8")
    catalog = REPO / "examples" / "data" / "lastfm" / "artists.parquet"
    spec = tmp_path / "bad-weight.yaml"
    spec.write_text(text.replace("path: data/lastfm/artists.parquet", f"path: {catalog}")
                        .replace("with: {weight: 0.3}", "with: {weight: 1.5}"), encoding="utf-8")
    proc = ltrr("validate", str(spec))
    assert proc.returncode == 1, proc.stdout
    assert "node 'ranker'" in proc.stderr and "weight" in proc.stderr


# --- unit level: the ranker itself -----------------------------------------------------------

@pytest.fixture
def popularity_module(monkeypatch):
    """Import the ranker from its source folder (works installed or not)."""
    monkeypatch.syspath_prepend(str(PACKAGE_DIR / "src"))
    from ltrr_popularity import ranker

    return ranker


def _context(tmp_path: Path) -> ComponentContext:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "catalog.parquet"
    pl.DataFrame({
        "id": ["a", "b", "c", "d"],
        "name": ["Obscure", "Famous", "Known", "Unrated"],
        "popularity": [0.1, 0.9, 0.5, None],
    }).write_parquet(path)
    catalog = Catalog(path, "id")
    return ComponentContext(node_id="ranker", state_dir=tmp_path / "state", spec_dir=tmp_path,
                            catalog_loader=lambda: catalog,
                            plan=PlanView(arms=("lexical",), slotters=(), budget=10, output_k=10))


def _merged() -> list[Merged]:
    # fused order a > b > c > d > x; "x" is not in the catalog (popularity 0)
    scores = {"a": 0.05, "b": 0.03, "c": 0.02, "d": 0.015, "x": 0.01}
    return [Merged(e, s, [Candidate(e, "lexical", r, s)])
            for r, (e, s) in enumerate(scores.items(), 1)]


def _ranker(module, tmp_path: Path, **params):
    r = module.PopularityRanker(module.PopularityParams(**params), _context(tmp_path))
    r.open()
    return r


def test_rank_weight_one_orders_by_popularity(popularity_module, tmp_path):
    ranker = _ranker(popularity_module, tmp_path, weight=1.0)
    out = ranker.rank(Query("q1", "anything"), _merged(), 10)
    assert out[0].entity_id == "b"                               # the most popular first
    assert [r.entity_id for r in out] == ["b", "c", "a", "d", "x"]  # null/unknown count as 0
    assert [r.rank for r in out] == [1, 2, 3, 4, 5]
    assert out[0].score == pytest.approx(0.9)
    assert out[0].sources[0].arm == "lexical"                    # provenance kept


def test_rank_weight_zero_keeps_fused_order(popularity_module, tmp_path):
    ranker = _ranker(popularity_module, tmp_path, weight=0.0)
    merged = _merged()
    out = ranker.rank(Query("q1", "anything"), merged, 3)
    assert [r.entity_id for r in out] == ["a", "b", "c"]         # fused order, cut at k
    assert out[0].score == pytest.approx(1.0)                    # minmax-normalised
    assert out[-1].score == pytest.approx((0.02 - 0.01) / (0.05 - 0.01))


def test_rank_blend_and_normalize_none(popularity_module, tmp_path):
    merged = _merged()
    blended = _ranker(popularity_module, tmp_path, weight=0.5).rank(Query("q", "t"), merged, 10)
    # a: 0.5*1 + 0.5*0.1 = 0.55, b: 0.5*0.5 + 0.5*0.9 = 0.70
    assert [r.entity_id for r in blended][:2] == ["b", "a"]
    assert blended[0].score == pytest.approx(0.70)
    raw = _ranker(popularity_module, tmp_path / "raw", weight=0.5, normalize="none")
    out = raw.rank(Query("q", "t"), merged, 10)
    assert out[0].entity_id == "b" and out[0].score == pytest.approx(0.5 * 0.03 + 0.5 * 0.9)
    assert raw.rank(Query("q", "t"), [], 10) == []


def test_params_are_validated(popularity_module):
    Params = popularity_module.PopularityParams
    assert Params().model_dump() == {"column": "popularity", "weight": 0.3, "normalize": "minmax"}
    for bad in ({"weight": 1.5}, {"weight": -0.1}, {"normalize": "zscore"}, {"colum": "x"}):
        with pytest.raises(ValidationError):
            Params(**bad)


def test_missing_column_is_a_state_error_naming_node_and_field(popularity_module, tmp_path):
    module = popularity_module
    ranker = module.PopularityRanker(module.PopularityParams(column="listeners"),
                                     _context(tmp_path))
    with pytest.raises(StateError) as info:
        ranker.open()
    err = info.value
    assert err.node == "ranker" and err.field == "with.column"
    assert "'listeners'" in err.message and "popularity" in (err.hint or "")


def test_out_of_range_column_is_a_state_error(popularity_module, tmp_path):
    path = tmp_path / "plays.parquet"
    pl.DataFrame({"id": ["a", "b"], "plays": [10, 2000]}).write_parquet(path)
    catalog = Catalog(path, "id")
    ctx = ComponentContext("ranker", tmp_path, tmp_path, lambda: catalog,
                           PlanView(arms=("lexical",), slotters=(), budget=10, output_k=10))
    module = popularity_module
    with pytest.raises(StateError, match=r"outside \[0, 1\]"):
        module.PopularityRanker(module.PopularityParams(column="plays"), ctx).open()


# --- end to end: needs the Lucene BM25 arm ---------------------------------------------------

@pytest.mark.timeout(1500)
def test_full_pipeline_index_and_run(with_plugin):
    """`ltrr index` + `ltrr run` of the example spec, in subprocesses.

    Depends on the bm25 arm's Lucene backend (src/ltrr_plugins/arms/lucene/). This test is not
    skipped when that backend is missing or broken: it fails and says so.
    """
    index = ltrr("index", SPEC, timeout=1200)
    assert index.returncode == 0, f"ltrr index failed:\n{index.stdout}\n{index.stderr}"

    run = ltrr("run", SPEC, "-q", "pop", "--format", "jsonl", "--no-log", timeout=300)
    assert run.returncode == 0, f"ltrr run failed:\n{run.stdout}\n{run.stderr}"
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0]["query"] == "pop"
    # offline runs wait for every arm: a cold JVM on a loaded machine drops nothing
    assert lines[0]["dropped"] == {} and lines[0]["trace"] == [], (lines[0], run.stderr)
    results = lines[0]["results"]
    assert 0 < len(results) <= 10, lines[0]
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    # blended scores live in [0, 1] (RRF scores, which the `score` ranker would show, are ~0.016)
    assert all(0.0 <= s <= 1.0 for s in scores) and scores[0] > 0.1, scores
    assert all("lexical" in r["arms"] for r in results)

"""The benchmark suite's own rules (the benchmarks run in `make bench`, not here)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_make_bench_runs_every_benchmark_script():
    """A full `make bench` is every bench_*.py: none can be left out of the run (two had no
    recorded row while docs quoted their targets)."""
    scripts = {p.name for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert set(_run_all().BENCHES.values()) == scripts


# --- figures docs quote -----------------------------------------------------------------

LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]*benchmarks/results/latest\.(?:md|json)[^)\s]*)\)")
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?")


def _leaves(obj):
    """Every number in a results document."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _leaves(v)


CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def quoted_figures(text: str) -> list[tuple[str, str]]:
    """(link text, number) for each number in a link to the benchmark results (links in
    code, such as an example of the syntax, are not quotes)."""
    text = CODE.sub("", text)
    return [(m.group(1), n) for m in LINK.finditer(text) for n in NUMBER.findall(m.group(1))]


def recorded(number: str, values: list[float]) -> bool:
    """Whether a figure as written (its decimals) is one of the recorded values."""
    digits = len(number.split(".")[1]) if "." in number else 0
    x = float(number.replace(",", ""))
    return any(round(v, digits) == x or round(abs(v), digits) == x for v in values)


def test_the_figure_checker_accepts_recorded_figures_and_refuses_others():
    text = ("p50 [12.3 ms, p99 40 ms](../benchmarks/results/latest.md#serve) and "
            "[0.7239](benchmarks/results/latest.md) but not [7 ms](elsewhere.md) nor "
            "`[8 ms](benchmarks/results/latest.md)`\n```\n[9 ms](benchmarks/results/latest.md)"
            "\n```")
    found = quoted_figures(text)
    assert [n for _, n in found] == ["12.3", "40", "0.7239"]        # not p99's 99
    assert recorded("12.3", [12.34]) and recorded("0.7239", [0.72391])
    assert not recorded("12.3", [12.4]) and not recorded("40", [41.0])


def test_every_figure_docs_quote_from_make_bench_is_recorded():
    """A number inside a link to benchmarks/results/latest.md is a figure of the last
    full `make bench` run: it must be in latest.json (to the decimals written)."""
    values = list(_leaves(json.loads((ROOT / "benchmarks" / "results" / "latest.json")
                                     .read_text())))
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md",
             *sorted((ROOT / "docs").rglob("*.md"))]
    missing = [f"{page.relative_to(ROOT)}: {number} in [{text}]"
               for page in pages for text, number in quoted_figures(page.read_text())
               if not recorded(number, values)]
    assert missing == []


def test_latest_results_are_one_full_run_on_one_clean_commit():
    """latest.json — what docs quote — is a full `make bench`: every benchmark ran, each
    wrote its row (no error), all on one commit with no uncommitted changes."""
    doc = json.loads((ROOT / "benchmarks" / "results" / "latest.json").read_text())
    assert doc["partial"] is False
    assert set(doc["benches"]) == set(_run_all().BENCHES)
    assert [n for n, b in doc["benches"].items() if b.get("error") or not b.get("metrics")] == []
    commits = {b["commit"] for b in doc["benches"].values()}
    assert len(commits) == 1 and doc["commits"] == sorted(commits), commits
    assert not commits.pop().endswith("+dirty")


# --- docs' bench blocks ------------------------------------------------------------------

def test_a_full_run_rewrites_the_bench_blocks_of_the_docs(tmp_path, monkeypatch):
    """A block `<!-- bench:NAME -->`...`<!-- /bench -->` gets that benchmark's rows, every
    figure a link to the results page the checker above verifies; the rest of the page is
    kept; a block naming no benchmark of the run is an error naming the page."""
    import pytest

    ra = _run_all()
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text("# Speed\n\nbefore\n<!-- bench:x -->\nan old 99 ms\n<!-- /bench -->\nafter\n"
                    "<!-- bench:x match=\"p99\" -->\n<!-- /bench -->\n")
    monkeypatch.setattr(ra, "doc_pages", lambda: [page])
    monkeypatch.setattr(ra, "RESULTS", tmp_path / "benchmarks" / "results")
    monkeypatch.setattr(ra.c, "ROOT", tmp_path)
    metrics = [ra.c.metric("p50", 12.3456, "ms", target="< 20 ms", passed=True, baseline=1.5,
                           baseline_name="health"),
               ra.c.metric("p99", 48.0, "ms", target="< 60 ms", passed=True)]
    doc = {"loadavg_1m_before": 0.4, "benches": {"x": {
        "commit": "abc1234", "env": {"cpus": 2, "loadavg_1m": 1.2}, "metrics": metrics}}}
    assert ra.update_docs(doc) == [page]
    text = page.read_text()
    assert "old 99" not in text and text.startswith("# Speed\n\nbefore\n") and "\nafter\n" in text
    assert "[12.3 ms](../benchmarks/results/latest.md)" in text
    assert "[1.500 ms](../benchmarks/results/latest.md) (health)" in text
    second = text.split('match="p99" -->')[1]
    assert "48.0 ms" in second and "12.3" not in second
    values = list(_leaves(doc))
    assert all(recorded(n, values) for _, n in quoted_figures(text))
    assert ra.update_docs(doc) == []                          # nothing new: nothing written
    page.write_text("<!-- bench:nope -->\n<!-- /bench -->\n")
    with pytest.raises(SystemExit, match="page.md: bench block 'nope'"):
        ra.update_docs(doc)


def test_every_bench_block_in_the_docs_names_a_benchmark():
    ra = _run_all()
    names = [m.group("name") for page in ra.doc_pages()
             for m in ra.DOC_BLOCK.finditer(page.read_text())]
    assert names and set(names) <= set(ra.BENCHES)


# --- scale data -------------------------------------------------------------------------

def _scale_data():
    spec = importlib.util.spec_from_file_location("scale_data",
                                                  ROOT / "benchmarks" / "scale_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_data_copies_the_catalog_and_its_relations_with_distinct_ids_and_names():
    import polars as pl

    sd = _scale_data()
    base = pl.read_parquet(sd.LASTFM / "artists.parquet")
    cat = sd.catalog(3, seed=7)
    assert cat.columns == base.columns and cat.height == 3 * base.height
    assert cat["artist_id"].n_unique() == cat.height
    assert cat.head(base.height).equals(base)                   # copy 0 is the original
    copy2 = cat.filter(pl.col("artist_id").str.ends_with("~2"))
    assert copy2.height == base.height
    assert (copy2["name"].str.split(" ").list.len()
            == base["name"].str.split(" ").list.len() + 1).all()
    assert cat["name"].n_unique() > 0.99 * cat.height
    assert cat.equals(sd.catalog(3, seed=7)) and not cat.equals(sd.catalog(3, seed=8))
    ids = set(cat["artist_id"])
    plays = sd.plays(3, seed=7)
    assert plays.height == 3 * pl.read_parquet(sd.LASTFM / "plays.parquet").height
    assert set(plays["artist_id"]) <= ids
    # one play in ten goes to another copy: the copies are one graph, not three islands
    copy_of = lambda s: s.str.extract(r"~(\d+)$").fill_null("0")    # noqa: E731
    crossed = (copy_of(plays["user_id"]) != copy_of(plays["artist_id"])).mean()
    assert 0.04 < crossed < 0.1
    tags = sd.tag_assignments(2)
    base_tags = pl.read_parquet(sd.LASTFM / "tag_assignments.parquet")
    unknown = set(base_tags["artist_id"]) - set(base["artist_id"])   # so in the original
    assert set(tags["artist_id"]) - ids == unknown | {f"{a}~1" for a in unknown}

"""Memory-mapped index state (issue 16, item 2): the vocabulary trie, the catalog's id
map, and the slotter's blocked fuzzy search of large vocabularies."""

from __future__ import annotations

import polars as pl
import pytest

from ltrr.catalog import Catalog
from ltrr.mapped import Vocabulary
from ltrr.types import Query


def test_vocabulary_finds_keys_and_blocks_by_length_prefix_and_suffix(tmp_path):
    keys = ["metallica", "metal", "métal", "abba", "the beatles", "meta", "ab"]
    ids = Vocabulary.write(tmp_path, "v", keys)
    v = Vocabulary.open(tmp_path, "v")
    assert len(v) == len(keys) and sorted(ids.tolist()) == list(range(len(keys)))
    assert [v.id(k) for k in keys] == ids.tolist()
    assert [v.key(i) for i in ids.tolist()] == keys
    assert v.id("metallic") == -1 and v.id("") == -1
    assert sorted(v.starting(5, "m")) == sorted([("metal", v.id("metal")),
                                                 ("métal", v.id("métal"))])
    assert v.starting(4, "me") == [("meta", v.id("meta"))]     # only that length
    assert sorted(k for k, _ in v.ending(5, "al")) == ["metal", "métal"]
    assert v.ending(11, "beatles") == [("the beatles", v.id("the beatles"))]
    assert sorted(k for k, _ in v.items()) == sorted(keys)
    with pytest.raises(ValueError, match="unique"):
        Vocabulary.write(tmp_path, "dup", ["a", "b", "a"])


def test_a_missing_vocabulary_file_is_an_os_error(tmp_path):
    Vocabulary.write(tmp_path, "v", ["x"])
    (tmp_path / "v.reversed.marisa").unlink()
    with pytest.raises(OSError):
        Vocabulary.open(tmp_path, "v")


def catalog_at(tmp_path, ids, titles) -> Catalog:
    path = tmp_path / "c.parquet"
    pl.DataFrame({"id": ids, "name": titles}).write_parquet(path)
    c = Catalog(path)
    c.use_map(tmp_path / "map", "name")
    return c


def test_the_catalog_map_answers_like_the_table_without_reading_it(tmp_path):
    ids, titles = ["a7", "b", "c-3", "d"], ["Alpha", None, "Gamma", "Delta"]
    first = catalog_at(tmp_path, ids, titles)
    assert first.map is None                       # not written yet: the table answers
    expected = ([first.row_of(e) for e in ids + ["zz"]], [first.title_of(e) for e in ids])
    assert first.write_map()
    again = catalog_at(tmp_path, ids, titles)
    assert again.map is not None
    assert [again.id_at(r) for r in range(4)] == ids and len(again) == 4
    assert ([again.row_of(e) for e in ids + ["zz"]], [again.title_of(e) for e in ids]) \
        == expected == ([0, 1, 2, 3, None], ["Alpha", None, "Gamma", "Delta"])
    assert "frame" not in again.__dict__           # never read the table


def test_a_changed_catalog_is_not_answered_from_a_stale_map(tmp_path):
    catalog_at(tmp_path, ["a", "b"], ["A", "B"]).write_map()
    changed = catalog_at(tmp_path, ["b", "a", "c"], ["B", "A", "C"])
    assert changed.map is None
    assert changed.row_of("a") == 1 and len(changed) == 3


def test_a_catalog_with_repeated_ids_is_not_mapped(tmp_path):
    c = catalog_at(tmp_path, ["a", "a"], ["A", "B"])
    assert not c.write_map() and c.map is None


def test_blocked_fuzzy_search_finds_single_typos_like_the_full_scan():
    """A vocabulary above ``fuzzy_scan_keys`` is searched among the keys sharing a
    span's first or last third: every one-typo variant of the Last.fm queries that the
    full scan slots, it slots the same."""
    import random

    from test_slotter_bounds import music_slotter, slots_of

    full, blocked = music_slotter(), music_slotter(fuzzy_scan_keys=0)
    assert full._scan and not blocked._scan
    rng = random.Random(3)
    names = [k for k, _ in sorted(full._vocab.items())[::40] if len(k) >= 6]
    typos = []
    for name in names:
        i = rng.randrange(len(name) - 1)
        typos += [name[:i] + name[i + 1:], name[:i] + name[i + 1] + name[i] + name[i + 2:],
                  name[:i] + "q" + name[i + 1:]]
    a, b = slots_of(full, typos), slots_of(blocked, typos)
    assert len(typos) > 500 and sum(bool(x) for x in a) > 0.8 * len(typos)
    assert [t for t, x, y in zip(typos, a, b) if x != y] == []
    # and it does less work: fewer keys compared per span
    q = [Query("r", "metalica")]
    assert blocked.slot_batch(q) == full.slot_batch(q)


SLOTTED = """
name: t
catalog: {path: c.parquet, title: name}
slotters:
  - {id: understand, use: dictionary, with: {slots: {artist: {column: name, entity: true}}}}
arms:
  - {id: names, use: entity_lookup, from: [understand], seeds: 5}
policy: {budget: 5}
output: {k: 5}
"""


def test_the_slotter_runs_before_ltrr_index_and_maps_its_vocabulary_after(tmp_path):
    from ltrr.compiler import compile_spec
    from ltrr.errors import StateError
    from ltrr.runtime.batch import index_plan
    from ltrr.runtime.pipeline import Pipeline
    from ltrr.spec import load_spec_text

    pl.DataFrame({"id": ["1", "2"], "name": ["Metallica", "Daft Punk"]}).write_parquet(
        tmp_path / "c.parquet")
    plan = compile_spec(load_spec_text(SLOTTED, tmp_path / "s.yaml"))

    def answer() -> tuple[list[str], bool]:
        with Pipeline(plan, log_decisions=False) as p:
            slotter = p.workspace.opened("understand")
            got = [r.entity_id for r in p.run(Query("r", "metalica")).ranking]
            return got, hasattr(slotter, "_unindexed")

    assert answer() == (["1"], True)                 # built at open, in a temporary folder
    assert index_plan(plan)["understand"]["keys"] == 2
    assert answer() == (["1"], False)                # mapped from its state folder
    assert (tmp_path / ".ltrr" / "t" / "_catalog" / "catalog.json").exists()
    pl.DataFrame({"id": ["1", "2", "3"], "name": ["Metallica", "Daft Punk", "Nas"]}
                 ).write_parquet(tmp_path / "c.parquet")
    plan = compile_spec(load_spec_text(SLOTTED, tmp_path / "s.yaml"))
    with pytest.raises(StateError, match="stale"):
        Pipeline(plan, log_decisions=False)

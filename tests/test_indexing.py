"""`ltrr index` state handling: idempotent, atomic on crash, clear errors on corrupt state."""

from __future__ import annotations

from types import SimpleNamespace

import polars as pl
import pytest

from ltrr.compiler import compile_spec
from ltrr.components import Arm, Indexed, Params
from ltrr.errors import StateError
from ltrr.hookspecs import hookimpl
from ltrr.registry import build_registry
from ltrr.runtime.commands import index_plan
from ltrr.runtime.pipeline import Pipeline
from ltrr.spec import load_spec_text
from ltrr.types import Candidate, Query

BUILDS: list[str] = []


class FileArm(Arm, Indexed):
    """Writes the catalog ids to a file; optionally crashes half way."""

    name = "file_arm"

    class Params(Params):
        crash: bool = False
        version: int = 1

    def build(self, out_dir, progress):
        BUILDS.append(self.ctx.node_id)
        (out_dir / "ids.txt").write_text("\n".join(self.ctx.catalog.ids[:2]))
        progress(1, 2)
        if self.params.crash:
            raise RuntimeError("disk full")
        (out_dir / "ids.txt").write_text("\n".join(self.ctx.catalog.ids))
        progress(2, 2)
        return {"ids": len(self.ctx.catalog.ids)}

    def open(self):
        self.ids = (self.ctx.state_dir / "ids.txt").read_text().split("\n")
        if self.ids[0] != self.ctx.catalog.ids[0]:
            raise ValueError("garbled ids file")

    def retrieve_batch(self, requests):
        return [[Candidate(e, "a", i + 1, 1.0) for i, e in enumerate(self.ids[:r.k])]
                for r in requests]


REG = build_registry(extra=[("file-arm", SimpleNamespace(ltrr_components=hookimpl(
    lambda: [FileArm])))])


def plan_for(tmp_path, **params):
    pl.DataFrame({"id": [f"e{i}" for i in range(4)]}).write_parquet(tmp_path / "c.parquet")
    with_ = ", ".join(f"{k}: {str(v).lower()}" for k, v in params.items())
    text = (f"name: t\ncatalog: {{path: c.parquet}}\narms: [{{id: a, use: file_arm, "
            f"with: {{{with_}}}}}]\npolicy: {{budget: 4}}\noutput: {{k: 4}}\n")
    return compile_spec(load_spec_text(text, tmp_path / "s.yaml"), REG)


def test_index_is_idempotent_and_rebuilds_when_params_change(tmp_path):
    BUILDS.clear()
    index_plan(plan_for(tmp_path))
    index_plan(plan_for(tmp_path))
    assert BUILDS == ["a"]
    index_plan(plan_for(tmp_path, version=2))
    assert BUILDS == ["a", "a"]
    index_plan(plan_for(tmp_path, version=2), force=True)
    assert len(BUILDS) == 3


def test_a_crash_mid_build_leaves_the_previous_index_whole(tmp_path):
    index_plan(plan_for(tmp_path))
    with pytest.raises(RuntimeError, match="disk full"):
        index_plan(plan_for(tmp_path, crash=True))
    state = tmp_path / ".ltrr/t"
    assert sorted(p.name for p in state.iterdir()) == ["a"]       # no temp folder left
    with Pipeline(plan_for(tmp_path), registry=REG, log_decisions=False) as p:
        assert [r.entity_id for r in p.run(Query("r", "q")).ranking] == ["e0", "e1", "e2", "e3"]


def test_crash_on_first_build_leaves_no_index_that_would_load(tmp_path):
    with pytest.raises(RuntimeError):
        index_plan(plan_for(tmp_path, crash=True))
    with pytest.raises(StateError, match="no index built yet"):
        Pipeline(plan_for(tmp_path, crash=True), registry=REG)


def test_corrupt_state_is_a_clear_error_with_the_fix(tmp_path):
    index_plan(plan_for(tmp_path))
    (tmp_path / ".ltrr/t/a/ids.txt").write_text("zz\nyy")
    with pytest.raises(StateError) as err:
        Pipeline(plan_for(tmp_path), registry=REG)
    text = str(err.value)
    assert "node 'a'" in text and "corrupt" in text and "--force" in text
    (tmp_path / ".ltrr/t/a/manifest.json").write_text("{not json")
    with pytest.raises(StateError, match="unreadable"):
        Pipeline(plan_for(tmp_path), registry=REG)

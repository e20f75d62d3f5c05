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


# --- leftovers of killed builds ----------------------------------------------------------

_BUILDER = """\
import os, sys
from pathlib import Path
from ltrr.state import atomic_dir
with atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "ids.txt").write_text("half")
    print(tmp.name, flush=True)
    if sys.argv[2] == "killed":
        os._exit(9)                     # like SIGKILL: no cleanup runs
    sys.stdin.read()                    # a live build, until the test lets it go
    raise SystemExit(3)                 # abandon it (atomic_dir removes its folder)
"""


def _builder(final, mode):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _BUILDER, str(final), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()        # printed once its folder exists
    assert name.endswith(".building"), name
    return proc, name


def test_index_removes_building_folders_of_killed_runs_but_not_of_live_ones(tmp_path):
    """`ltrr index` killed mid-build leaves `.<node>.*.building`; the next run removes it,
    but never the folder of a build that is still running."""
    state = tmp_path / ".ltrr" / "t"
    killed, stale = _builder(state / "a", "killed")
    assert killed.wait(timeout=60) == 9
    live, running = _builder(state / "a", "live")
    try:
        old_dead = state / f".a.old-{killed.pid}"        # killed between its two renames
        old_dead.mkdir()
        index_plan(plan_for(tmp_path))
        left = sorted(p.name for p in state.iterdir())
        assert stale not in left
        assert old_dead.name not in left
        assert running in left                           # its owner is alive: kept
        assert (state / running / "ids.txt").read_text() == "half"
        assert (state / "a" / "ids.txt").exists()
    finally:
        live.stdin.close()
        assert live.wait(timeout=60) == 3
    assert sorted(p.name for p in state.iterdir()) == ["a"]


def test_an_index_replaced_by_a_killed_run_is_put_back_not_rebuilt(tmp_path):
    """Killed between its two renames, a build leaves no `<node>/` but `.<node>.old-<pid>`:
    the next run puts that index back (current, so nothing is rebuilt)."""
    import subprocess
    import sys

    BUILDS.clear()
    index_plan(plan_for(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=60)
    state = tmp_path / ".ltrr" / "t"
    (state / "a").rename(state / f".a.old-{int(dead.stdout)}")
    index_plan(plan_for(tmp_path))
    assert BUILDS == ["a"]
    assert sorted(p.name for p in state.iterdir()) == ["a"]
    with Pipeline(plan_for(tmp_path), registry=REG, log_decisions=False) as p:
        assert [r.entity_id for r in p.run(Query("r", "q")).ranking] == ["e0", "e1", "e2", "e3"]

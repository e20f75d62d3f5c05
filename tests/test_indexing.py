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
from ltrr.runtime.batch import index_plan
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
    # no temp folder left; the catalog's id map of the first build
    assert sorted(p.name for p in state.iterdir()) == ["_catalog", "a"]
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
    assert sorted(p.name for p in state.iterdir()) == ["_catalog", "a"]


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
    assert sorted(p.name for p in state.iterdir()) == ["_catalog", "a"]
    with Pipeline(plan_for(tmp_path), registry=REG, log_decisions=False) as p:
        assert [r.entity_id for r in p.run(Query("r", "q")).ranking] == ["e0", "e1", "e2", "e3"]


# --- data files named by a spec: regular files only, read only once checked -------------

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
LASTFM = REPO / "examples" / "data" / "lastfm"
FILES_SPEC = """\
version: 1
name: files
catalog: {{path: {catalog}, id: artist_id{fmt}}}
slotters:
  - id: understand
    use: dictionary
    with: {{slots: {{artist: {{column: name, entity: true}}}}}}
arms:
  - id: related
    use: graph
    from: [understand]
    with:
      relations:
        - {{kind: co_occurrence, path: {relation}, group: user_id, entity: artist_id}}
policy: {{budget: 10}}
"""


def _files_spec(tmp_path, catalog=LASTFM / "artists.parquet", relation=LASTFM / "plays.parquet",
                fmt=None):
    spec = tmp_path / "files.yaml"
    spec.write_text(FILES_SPEC.format(catalog=catalog, relation=relation,
                                      fmt=f", format: {fmt}" if fmt else ""))
    return spec


def _index_cli(spec) -> str:
    """`ltrr index` in a subprocess: exit 1 with one `error:` line and no traceback. The
    generous timeout turns a hang (a FIFO, /dev/zero) into a failure."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "ltrr"
    proc = subprocess.run([str(script), "index", str(spec)], cwd=spec.parent,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _special(tmp_path, kind):
    import os
    from pathlib import Path

    if kind == "folder":
        folder = tmp_path / "data.parquet"
        folder.mkdir()
        return folder, "a folder"
    if kind == "fifo":
        fifo = tmp_path / "pipe.parquet"
        os.mkfifo(fifo)
        return fifo, "a named pipe"
    return Path("/dev/zero"), "a device"


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_a_catalog_that_is_not_a_regular_file_is_refused_before_reading(tmp_path, kind):
    """Before: a folder was a traceback, a FIFO blocked (ignoring Ctrl-C), /dev/zero was
    hashed forever. Now `ltrr index` names the spec line of catalog.path and the kind."""
    path, what = _special(tmp_path, kind)
    spec = _files_spec(tmp_path, catalog=path)
    line = _index_cli(spec)
    assert line.startswith(f"error: {spec}:3:"), line         # where catalog.path is written
    assert f"catalog file {path} is {what}" in line and "not a regular file" in line


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_a_relation_that_is_not_a_regular_file_is_named_as_such(tmp_path, kind):
    path, what = _special(tmp_path, kind)
    line = _index_cli(_files_spec(tmp_path, relation=path))
    assert "node 'related' field 'with.relations.0.path'" in line
    assert f"relation file {path} is {what}" in line and "not a regular file" in line


def test_proc_environ_as_a_csv_catalog_echoes_no_environment(tmp_path, monkeypatch):
    """/proc/self/environ read as CSV made its first variable the column names, which the
    `catalog.id` hint printed: the hint echoed the environment."""
    monkeypatch.setenv("LTRR_TEST_SECRET", "hunter2-do-not-print")
    line = _index_cli(_files_spec(tmp_path, catalog="/proc/self/environ", fmt="csv"))
    assert "hunter2" not in line and "LTRR_TEST_SECRET" not in line
    assert "catalog file /proc/self/environ is empty: it reports 0 bytes" in line


def test_column_names_in_hints_are_truncated_and_printable(tmp_path):
    from ltrr.catalog import Catalog

    long_name = "SECRET=" + "x" * 200
    path = tmp_path / "c.csv"
    path.write_text(f'"{long_name}","b\x1b[31mred"\n1,2\n')
    with pytest.raises(StateError) as err:
        Catalog(path, "id").frame
    hint = err.value.hint
    assert "x" * 50 not in hint and "\x1b" not in hint
    assert hint.startswith("set catalog.id to one of: SECRET=xxx") and "b?[31mred" in hint
    many = tmp_path / "many.csv"
    many.write_text(",".join(f"c{i}" for i in range(100)) + "\n" + ",".join("1" * 100) + "\n")
    with pytest.raises(StateError) as err:
        Catalog(many, "id").frame
    assert "c19, … (80 more)" in err.value.hint and "c20" not in err.value.hint


def test_a_read_error_does_not_echo_the_file(tmp_path):
    from ltrr.catalog import Catalog

    path = tmp_path / "c.csv"
    path.write_text("id,n\n" + "".join(f"{i},{i}\n" for i in range(200))
                    + "secret-line-" + "s" * 500 + ",1,2,3\n")
    with pytest.raises(StateError) as err:
        Catalog(path, "id").frame
    assert len(str(err.value)) < 400 and "s" * 200 not in str(err.value)

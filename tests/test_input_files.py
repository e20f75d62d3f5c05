"""Files named on the command line or in a spec's params (queries, qrels, simulator data)
are read only when they are regular files: a folder, a FIFO or /dev/zero is a one-line
error, never a traceback or a hang. Catalogs and relations: tests/test_indexing.py; the
spec itself: tests/test_spec.py.

The commands run in a subprocess with a generous timeout: a hang fails the test, a
refusal takes well under a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltrr.errors import RunError

REPO = Path(__file__).resolve().parent.parent
MUSIC = REPO / "pipelines" / "music.yaml"


def _ltrr(*args: str, cwd: Path) -> str:
    script = Path(sys.executable).parent / "ltrr"
    proc = subprocess.run([str(script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _special(tmp_path: Path, kind: str) -> tuple[Path, str]:
    if kind == "folder":
        (tmp_path / "q.tsv").mkdir()
        return tmp_path / "q.tsv", "a folder"
    if kind == "fifo":
        os.mkfifo(tmp_path / "q.tsv")
        return tmp_path / "q.tsv", "a named pipe"
    return Path("/dev/zero"), "a device"


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_run_refuses_a_query_file_that_is_not_a_regular_file(tmp_path, kind):
    path, what = _special(tmp_path, kind)
    line = _ltrr("run", str(MUSIC), "--queries", str(path), cwd=tmp_path)
    assert line.startswith(f"error: {path}: the query file is {what}"), line


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_evaluate_refuses_qrels_that_are_not_a_regular_file(tmp_path, kind):
    path, what = _special(tmp_path, kind)
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\tbeatles\n")
    line = _ltrr("evaluate", str(MUSIC), "--queries", str(queries), "--qrels", str(path),
                 cwd=tmp_path)
    assert line.startswith(f"error: {path}: the qrels file is {what}"), line


def test_missing_query_and_qrels_files_keep_their_message(tmp_path):
    from ltrr.evaluation import read_qrels
    from ltrr.runtime.queries import read_queries

    with pytest.raises(RunError) as err:
        read_queries(tmp_path / "nope.tsv")
    assert err.value.message == "query file not found"
    assert str(err.value.where) == str(tmp_path / "nope.tsv")
    with pytest.raises(RunError) as err:
        read_qrels(tmp_path / "nope.qrels")
    assert err.value.message == "qrels file not found"


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_simulator_data_files_must_be_regular_files(tmp_path, kind):
    """`with.data` of the lastfm user model names a folder of Parquet files (interactions);
    in a subprocess, as a FIFO or /dev/zero used to hang the reader."""
    target = tmp_path / "artists.parquet"
    if kind == "folder":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    code = ("import sys\nfrom ltrr.errors import RunError\n"
            "from ltrr_plugins.simulators.query_model import QueryModel\n"
            "try:\n    QueryModel.from_dir(sys.argv[1])\n"
            "except RunError as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    what = {"folder": "a folder", "fifo": "a named pipe (FIFO)", "device": "a device"}[kind]
    assert f"artists.parquet {target} is {what}, not a regular file" in proc.stdout


def test_missing_simulator_data_keeps_its_message(tmp_path):
    from ltrr_plugins.simulators.query_model import QueryModel

    with pytest.raises(RunError, match="artists.parquet not found") as err:
        QueryModel.from_dir(tmp_path)
    assert err.value.hint == "point at a folder like examples/data/lastfm/"


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_feedback_refuses_an_events_file_that_is_not_a_regular_file(tmp_path, kind):
    """Before: a FIFO blocked `ltrr feedback` and /dev/zero was read until memory ran out."""
    path, what = _special(tmp_path, kind)
    line = _ltrr("feedback", str(MUSIC), str(path), cwd=tmp_path)
    assert line.startswith(f"error: {path}: the events file is {what}"), line


def test_an_empty_events_file_is_no_events_and_a_proc_file_is_not_read(tmp_path):
    from ltrr.feedback.events import read_events

    empty = tmp_path / "none.jsonl"
    empty.write_bytes(b"")
    assert read_events(empty).height == 0
    # /proc/self/environ reports 0 bytes: it is never opened, so nothing of it is echoed
    assert read_events(Path("/proc/self/environ")).height == 0
    with pytest.raises(RunError) as err:
        read_events(tmp_path / "nope.jsonl")
    assert err.value.message == "events file not found"
    assert str(err.value.where) == str(tmp_path / "nope.jsonl")

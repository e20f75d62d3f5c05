"""ltrr as users get it: a wheel built from this repository, installed into fresh venvs
and driven from a folder outside the repository.

Two installs: core only (its dependencies resolved by pip, no extra), and with every
extra. The second reuses the packages of the test venv (linked in through a ``.pth``
file, ltrr's own editable install left out) so it costs seconds, not a re-download of
torch; ltrr itself comes only from the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {name: ROOT / "src" / name for name in ("ltrr", "ltrr_plugins")}
CATALOG = ROOT / "examples" / "data" / "lastfm" / "artists.parquet"

#: A spec of core components only: it validates without any extra.
CORE_SPEC = """\
name: core
catalog: {path: artists.parquet, id: artist_id, title: name}
slotters:
  - {id: understand, use: dictionary, with: {slots: {artist: {column: name, entity: true}}}}
arms:
  - {id: names, use: entity_lookup, from: [understand]}
policy: {budget: 20}
output: {k: 5}
"""

#: Lucene BM25 end to end: needs ltrr[lucene].
BM25_SPEC = """\
name: smoke
catalog: {path: artists.parquet, id: artist_id, title: name}
arms:
  - id: lexical
    use: bm25
    with: {fields: {name: 3.0, tag_text: 1.0}}
policy: {budget: 20}
output: {k: 5}
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the build never writes into the repo)."""
    tmp = tmp_path_factory.mktemp("wheel")
    project = tmp / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    for folder in SOURCES.values():
        shutil.copytree(folder, project / "src" / folder.name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
                           str(project)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found, = (tmp / "dist").glob("ltrr-*.whl")
    return found


def _venv(folder: Path) -> Path:
    """A fresh venv without pip (the test venv's pip installs into it); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    return folder / "bin" / "python"


def _pip_install(python: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "-q", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _cli(python: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The installed console script, run outside the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(python.with_name("ltrr")), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _workdir(tmp: Path) -> Path:
    work = tmp / "work"
    work.mkdir()
    shutil.copy(CATALOG, work / "artists.parquet")
    (work / "core.yaml").write_text(CORE_SPEC)
    (work / "smoke.yaml").write_text(BM25_SPEC)
    return work


def test_the_wheel_ships_every_module_of_the_source_tree(wheel):
    """Every .py under src/ is in the wheel under its import name (the package list was
    written by hand: ltrr.serve was missing, so a wheel had no `ltrr serve`)."""
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    expected = {f"{name}/{p.relative_to(folder).as_posix()}"
                for name, folder in SOURCES.items() for p in folder.rglob("*.py")
                if "__pycache__" not in p.parts}
    assert sorted(expected - shipped) == []


@pytest.mark.timeout(900)
def test_core_only_install_validates_lists_and_names_the_missing_extra(wheel, tmp_path):
    """No extra: `ltrr plugins` lists every built-in (those needing a backend say which
    extra), a spec of core components validates, and a spec using bm25 is refused at its
    node with the install command, never an ImportError."""
    python = _venv(tmp_path / "core")
    _pip_install(python, "-c", str(ROOT / "constraints.txt"), str(wheel))
    work = _workdir(tmp_path)

    for backend in ("jnius", "faiss", "vowpalwabbit", "lightgbm", "fastapi", "matplotlib"):
        probe = subprocess.run([str(python), "-c", f"import {backend}"], cwd=work,
                               capture_output=True, text=True)
        assert probe.returncode != 0, f"{backend} is importable in a core-only install"

    listed = _cli(python, work, "plugins")
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[1] for line in listed.stdout.splitlines()[1:]
             if len(line.split()) > 1 and line.split()[0] in
             ("encoder", "slotter", "policy", "arm", "merger", "ranker")}
    assert {"bm25", "dense", "graph", "vw", "lightgbm", "static", "score"} <= names
    assert "ltrr[lucene]" in listed.stdout and "ltrr[rankers]" in listed.stdout

    ok = _cli(python, work, "validate", "core.yaml")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: core.yaml")

    refused = _cli(python, work, "validate", "smoke.yaml")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert re.search(r"smoke\.yaml:5:\d+: node 'lexical' field 'use': arm 'bm25' needs "
                     r".*pip install 'ltrr\[lucene\]'", refused.stderr), refused.stderr

    serve = _cli(python, work, "serve", "core.yaml", "--port", "0")
    assert serve.returncode == 1 and "Traceback" not in serve.stderr
    assert "pip install 'ltrr[serve]'" in serve.stderr


def _link_dependencies(python: Path, into: Path) -> None:
    """Make the test venv's installed packages, except ltrr itself, importable from the
    venv of ``python`` (after its own site-packages, so the wheel's ltrr wins)."""
    own = Path(sysconfig.get_paths()["purelib"])
    into.mkdir()
    for entry in own.iterdir():
        if entry.name.startswith(("ltrr", "__editable__", "ltrr_popularity")) \
                or entry.suffix == ".pth":
            continue
        (into / entry.name).symlink_to(entry)
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "ltrr-test-dependencies.pth").write_text(f"{into}\n")


@pytest.mark.timeout(900)
def test_full_install_indexes_runs_and_serves_outside_the_repository(wheel, tmp_path):
    """The wheel with every backend: index + run + serve a BM25 spec from a folder that is
    not the repository, with ltrr imported from the installed wheel."""
    import httpx

    python = _venv(tmp_path / "full")
    _link_dependencies(python, tmp_path / "deps")
    _pip_install(python, "--no-deps", str(wheel))
    work = _workdir(tmp_path)

    where = subprocess.run([str(python), "-c", "import ltrr, ltrr_plugins; "
                            "print(ltrr.__file__); print(ltrr_plugins.__file__)"],
                           cwd=work, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).is_relative_to(tmp_path / "full"), path

    for args in (("validate", "smoke.yaml"), ("index", "smoke.yaml")):
        done = _cli(python, work, *args)
        assert done.returncode == 0, f"ltrr {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    run = _cli(python, work, "run", "smoke.yaml", "-q", "radiohead", "--format", "jsonl",
               "--no-log")
    assert run.returncode == 0, run.stderr
    import polars as pl

    radiohead, = pl.read_parquet(CATALOG).filter(pl.col("name") == "Radiohead")["artist_id"]
    top = json.loads(run.stdout.splitlines()[0])
    assert top["results"][0]["id"] == radiohead, top

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen([str(python.with_name("ltrr")), "serve", "smoke.yaml",
                             "--port", "0"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if m := re.search(r"listening on (http://\S+)", line):
                url = m.group(1)
                break
        else:
            pytest.fail("ltrr serve exited:\n" + "".join(lines))
        answer = httpx.post(url + "/search", json={"query": "radiohead"}, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["entity_id"] == radiohead, answer.text
        assert httpx.get(url + "/health", timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, proc.stderr.read()

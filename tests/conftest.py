"""Shared test fixtures."""

from __future__ import annotations

import pytest

from ltrr.components import Arm, Params
from ltrr.hookspecs import hookimpl


class SeedEchoArm(Arm):
    """Test arm that accepts candidates from upstream arms via ``from:``."""

    name = "seed_echo"
    Params = Params
    seed_types = frozenset({"candidates"})

    def retrieve_batch(self, requests):
        return [[] for _ in requests]


class SeedEchoPlugin:
    """An in-process plugin object providing :class:`SeedEchoArm`."""

    @hookimpl
    def ltrr_components(self):
        return [SeedEchoArm]


@pytest.fixture(scope="session")
def seeded_registry():
    """The installed components plus the ``seed_echo`` arm (which takes seeds)."""
    from ltrr.registry import build_registry

    return build_registry(extra=[("testplugin", SeedEchoPlugin())])


class ListArm(Arm):
    """Returns '<node>-1' … '<node>-k', scored 1/rank: the entity '<arm>-r' is a candidate
    iff the allocation gives that arm at least r — what the policies' tests reward."""

    name = "listed"
    Params = Params

    def retrieve_batch(self, requests):
        from ltrr.types import Candidate

        return [[Candidate(f"{self.ctx.node_id}-{j}", self.ctx.node_id, j, 1.0 / j)
                 for j in range(1, r.k + 1)] for r in requests]


def plugin(*classes):
    """An in-process plugin object registering ``classes``."""
    from types import SimpleNamespace

    return SimpleNamespace(ltrr_components=hookimpl(lambda: list(classes)))


def list_plan(folder, registry, policy: str, *, arms=("x", "y"), use: str = "listed",
              k: int = 5, extra: str = ""):
    """The compiled pipeline of ``arms`` (each ``use``) and ``policy`` (a YAML flow
    mapping) in ``folder``, over the catalog ``../c.parquet`` the caller wrote."""
    from ltrr.compiler import compile_spec
    from ltrr.spec import load_spec_text

    folder.mkdir(exist_ok=True)
    listed = "".join(f"  - {{id: {a}, use: {use}}}\n" for a in arms)
    text = (f"name: t\ncatalog: {{path: ../c.parquet}}\narms:\n{listed}policy: {policy}\n"
            f"output: {{k: {k}}}\n{extra}\n")
    return compile_spec(load_spec_text(text, folder / "spec.yaml"), registry)


def decision_row(action, context, entity: str, *, weight: float = 1.0,
                 hit_arm: str | None = None, timestamp: float = 0.0,
                 event_type: str = "play") -> dict:
    """One event of a decision as ``ltrr.feedback.interactions`` joins it: ``hit_arm`` is
    the arm that retrieved ``entity`` (None: none did)."""
    import json

    q = context.query
    return {"event_id": f"e-{q.request_id}", "request_id": q.request_id,
            "user_id": q.user_id, "query": q.text, "entity_id": entity, "type": event_type,
            "weight": weight, "position": 1, "timestamp": timestamp,
            "in_candidates": hit_arm is not None, "arms": [hit_arm] if hit_arm else None,
            "allocation": [{"arm": a, "k": n} for a, n in action.allocation.items()],
            "probability": action.probability, "action_index": action.index,
            "pmf": json.dumps(action.pmf), "action_features": json.dumps(action.features),
            "timings_ms": None, "entity_type": None}


def interactions_of(rows: list[dict]):
    """``decision_row`` s as an interactions frame."""
    import polars as pl

    from ltrr.feedback.interactions import INTERACTION_COLUMNS

    return pl.DataFrame(rows, schema_overrides={"timings_ms": pl.String,
                                                "entity_type": pl.String}).select(
        INTERACTION_COLUMNS)


def tiny_spec(folder):
    """A two-entity catalog and a one-arm spec (names looked up by a dictionary slotter)
    in ``folder``: enough for CLI paths that need a valid pipeline without indexes."""
    import polars as pl

    pl.DataFrame({"id": ["a", "b"], "name": ["x", "y"]}).write_parquet(folder / "c.parquet")
    spec = folder / "s.yaml"
    spec.write_text("name: t\ncatalog: {path: c.parquet}\n"
                    "slotters: [{id: u, use: dictionary, with: {slots: {n: {column: name, "
                    "entity: true, min_chars: 1}}}}]\n"
                    "arms: [{id: names, use: entity_lookup, from: [u]}]\n"
                    "policy: {budget: 5}\noutput: {k: 2}\n")
    return spec


def indexed_copy(folder, name: str, deadline_ms: float | None = None) -> tuple:
    """``pipelines/<name>.yaml`` copied into ``folder`` with absolute data paths and a state
    dir there (and every arm's ``deadline_ms`` set to ``deadline_ms`` if given), then
    indexed with ``ltrr index``; returns (spec path, index stderr)."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    data = yaml.safe_load((root / f"pipelines/{name}.yaml").read_text())
    data["catalog"]["path"] = str(root / "examples/data/lastfm/artists.parquet")
    for arm in data["arms"]:                       # relation files, relative to pipelines/
        for rel in arm.get("with", {}).get("relations", []):
            rel["path"] = str((root / "pipelines" / rel["path"]).resolve())
        if deadline_ms is not None:
            arm["deadline_ms"] = deadline_ms
    data["state_dir"] = str(folder / "state")
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    ltrr = str(Path(sys.executable).with_name("ltrr"))
    done = subprocess.run([ltrr, "index", str(path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return path, done.stderr


def shared_index(tmp_path_factory, name: str, deadline_ms: float | None = None) -> tuple:
    """``indexed_copy`` of ``pipelines/<name>.yaml`` built once per test run: with
    pytest-xdist, in a folder every worker shares, by the first worker to get there (a
    file lock), the others waiting; returns (spec path, index stderr). Use it through
    :func:`linked_copy`: the built folder is read by every worker."""
    import os

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    built = root / f"shared-{name}"
    with FileLock(str(root / f"shared-{name}.lock")):
        done = built / "index.log"
        if not done.exists():
            built.mkdir(exist_ok=True)
            _, log = indexed_copy(built, name, deadline_ms)
            done.write_text(log)
    return built / f"{name}.yaml", done.read_text()


def linked_copy(indexed, folder):
    """A copy of an indexed spec in ``folder`` with its own, empty state folder (logs,
    learned state), the built indexes and encoder caches linked in."""
    import yaml

    data = yaml.safe_load(indexed.read_text())
    built = indexed.parent / "state"
    state = folder / "state"
    state.mkdir(parents=True)
    for node in built.iterdir():
        if (node / "manifest.json").exists() or node.name.endswith(".cache"):
            (state / node.name).symlink_to(node, target_is_directory=True)
    data["state_dir"] = str(state)
    path = folder / indexed.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def music_spec(tmp_path_factory):
    """pipelines/music.yaml copied with absolute data paths and its own state dir, the
    indexes built once per test run (the dense arm's encoding is the slow part)."""
    path, log = shared_index(tmp_path_factory, "music")
    assert "documents=17632" in log
    return linked_copy(path, tmp_path_factory.mktemp("music"))


# --- ltrr serve ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def serve_spec_indexed(tmp_path_factory):
    """pipelines/music-serve.yaml copied with absolute data paths, indexed once per session.

    Its arms get a 60 s deadline: a server applies deadlines, and a loaded test machine
    must not drop an arm (and change a ranking) in tests that are not about deadlines."""
    return shared_index(tmp_path_factory, "music-serve", deadline_ms=60_000)[0]


def fresh_serve_spec(indexed, folder):
    """A copy of the indexed music-serve spec in ``folder`` with its own, empty state
    folder (logs, learned state), the built indexes linked in."""
    return linked_copy(indexed, folder)


@pytest.fixture
def serve_spec(serve_spec_indexed, tmp_path):
    """The indexed music-serve spec with a fresh state folder (see fresh_serve_spec)."""
    return fresh_serve_spec(serve_spec_indexed, tmp_path)


class ServeProcess:
    """A real ``ltrr serve SPEC --port 0`` subprocess; ``url`` once it listens."""

    def __init__(self, spec, *args: str):
        import subprocess
        import sys
        import threading
        from pathlib import Path

        self.spec = spec
        ltrr = str(Path(sys.executable).with_name("ltrr"))
        self.proc = subprocess.Popen([ltrr, "serve", str(spec), "--port", "0", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import re

        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m and self.url is None:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 180.0) -> "ServeProcess":
        """Wait until the server listens and answers /health."""
        import time

        import httpx

        self._ready.wait(timeout)
        assert self.url, f"ltrr serve did not start:\n{self.stderr}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no /health:\n{self.stderr}"
            time.sleep(0.1)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful shutdown) and the exit status."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._reader.join(10)


@pytest.fixture
def start_server():
    """``start_server(spec, *flags)`` → a ready :class:`ServeProcess`; all are killed at
    teardown if still running."""
    started: list[ServeProcess] = []

    def start(spec, *args: str, ready: bool = True) -> ServeProcess:
        server = ServeProcess(spec, *args)
        started.append(server)
        return server.wait_ready() if ready else server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="module")
def module_server(serve_spec_indexed, tmp_path_factory):
    """One ``ltrr serve`` for a whole test module, on its own fresh state folder."""
    spec = fresh_serve_spec(serve_spec_indexed, tmp_path_factory.mktemp("served"))
    server = ServeProcess(spec)
    try:
        yield server.wait_ready()
    finally:
        server.kill()

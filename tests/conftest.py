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


@pytest.fixture(scope="session")
def music_spec(tmp_path_factory):
    """pipelines/music.yaml copied with absolute data paths and a temp state dir, indexed
    once per test session (the dense arm's encoding is the slow part)."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    folder = tmp_path_factory.mktemp("music")
    data = yaml.safe_load((root / "pipelines/music.yaml").read_text())
    data["catalog"]["path"] = str(root / "examples/data/lastfm/artists.parquet")
    for arm in data["arms"]:                       # relation files, relative to pipelines/
        for rel in arm.get("with", {}).get("relations", []):
            rel["path"] = str((root / "pipelines" / rel["path"]).resolve())
    data["state_dir"] = str(folder / "state")
    path = folder / "music.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    ltrr = str(Path(sys.executable).with_name("ltrr"))
    done = subprocess.run([ltrr, "index", str(path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "documents=17632" in done.stderr
    return path

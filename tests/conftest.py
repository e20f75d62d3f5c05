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

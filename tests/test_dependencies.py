"""Dependency ranges and the lock (issue 10, item 20).

Every requirement in pyproject.toml has a floor, and a cap below its next major unless
that package bumps the major with every release; pyarrow's floor is past CVE-2023-47248;
``constraints.txt`` pins every dependency, at a version inside pyproject's range, and
the Makefile installs through it. Static checks of the files: whether a venv holds the
locked versions is `make install`'s business (see README, "Locked versions").
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "constraints.txt"
# Packages whose major version moves with (almost) every release, so a cap would only
# block the next release unseen: the lock pins the tested one.
UNCAPPED = {"pyarrow", "packaging", "setuptools"}


def requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    every = [Requirement(r) for r in project["dependencies"] + sum(extras.values(), [])]
    return [r for r in every if r.name != project["name"]]    # `all` names ltrr's extras


def lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for n, line in enumerate(LOCK.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;@+]+)", line)
        assert m, f"constraints.txt:{n}: expected name==version (no URL, no local label): {line!r}"
        pins[canonicalize_name(m.group(1))] = Version(m.group(2))
    return pins


@pytest.mark.parametrize("req", requirements(), ids=str)
def test_every_requirement_has_a_floor_and_a_cap(req):
    ops = {s.operator for s in req.specifier}
    assert ops & {">=", ">", "==", "~="}, f"{req}: no lower bound"
    if canonicalize_name(req.name) not in UNCAPPED:
        assert ops & {"<", "<=", "==", "~="}, f"{req}: no upper bound"


def test_pyarrow_floor_is_past_cve_2023_47248():
    (pyarrow,) = [r for r in requirements() if r.name == "pyarrow"]
    assert not pyarrow.specifier.contains("14.0.0")
    assert pyarrow.specifier.contains("14.0.1")


def test_the_lock_pins_every_requirement_inside_its_range():
    pins = lock()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints.txt: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req}")
    # torch is pinned by the Makefile's TORCH (overridable), not by the lock
    assert "torch" not in pins


def test_make_installs_through_the_lock_and_can_refresh_it():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^LOCK\s*:?=\s*constraints\.txt$", makefile, re.M)
    recipe = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    installs = [line for line in recipe.splitlines()
                if "pip install" in line and "--upgrade pip" not in line]
    assert len(installs) == 2, recipe    # torch (and its dependencies), then ltrr's
    assert all("-c $(LOCK)" in line for line in installs), installs
    assert re.search(r"^lock:", makefile, re.M), "no `make lock` target"

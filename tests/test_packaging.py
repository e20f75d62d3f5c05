"""The wheel built from this repository ships every package of the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"ltrr": ROOT / "ltrr", "ltrr_plugins": ROOT / "plugins"}   # import name → folder


def test_the_wheel_ships_every_module_of_the_source_tree(tmp_path):
    """Every .py under ltrr/ and plugins/ is in the wheel under its import name (the
    package list is written by hand: ltrr.serve was missing, so a wheel had no
    `ltrr serve`)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in SOURCES.values():
        shutil.copytree(folder, src / folder.name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                           str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    wheel, = (tmp_path / "dist").glob("ltrr-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    expected = {f"{name}/{p.relative_to(folder).as_posix()}"
                for name, folder in SOURCES.items() for p in folder.rglob("*.py")
                if "__pycache__" not in p.parts}
    assert sorted(expected - shipped) == []

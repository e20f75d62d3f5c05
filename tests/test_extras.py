"""A component whose backend is not installed is refused at compile time, at its node,
with the install command (ltrr.extras); the core never imports a backend."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ltrr import extras
from ltrr.components import Arm, Params
from ltrr.errors import CompileError
from ltrr.hookspecs import hookimpl


class FarArm(Arm):
    """An arm whose backend is a package that does not exist."""

    name = "far"
    Params = Params
    requires = {"ltrr_no_such_backend": "ltrr-far-backend>=1"}

    def retrieve_batch(self, requests):
        return [[] for _ in requests]


class FarPlugin:
    @hookimpl
    def ltrr_components(self):
        return [FarArm]


@pytest.fixture(scope="module")
def registry():
    from ltrr.registry import build_registry

    return build_registry(extra=[("far", FarPlugin())])


def test_missing_backend_is_located_at_each_node_that_needs_it(tmp_path, registry):
    from ltrr.compiler import compile_spec
    from ltrr.spec import load_spec

    (tmp_path / "c.csv").write_text("id,name\na,x\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ncatalog: {path: c.csv}\n"
                    "arms:\n  - {id: one, use: far}\n  - {id: two, use: far}\n"
                    "policy: {budget: 4}\noutput: {k: 2}\n")
    with pytest.raises(CompileError) as err:
        compile_spec(load_spec(spec), registry)
    first, = [err.value]
    assert (first.node, first.field) == ("one", "use")
    assert str(first.where).endswith("s.yaml:4:20")
    assert "arm 'far' needs ltrr_no_such_backend" in first.message
    assert first.hint == "pip install 'ltrr-far-backend>=1'"
    assert [(e.node, e.field) for e in first.also] == [("two", "use")]


def test_missing_and_describe_name_modules_and_requirements():
    absent = extras.missing({"json": "x", "ltrr_no_such_backend.sub": "ltrr[far]"})
    assert absent == {"ltrr_no_such_backend.sub": "ltrr[far]"}
    assert extras.install_hint(absent) == "pip install 'ltrr[far]'"
    assert "ltrr_no_such_backend.sub" in extras.describe(absent)


def test_the_core_imports_no_backend():
    """Compiling and validating a spec loads none of the optional backends (a plugin
    module may be imported for its registration, never its backend)."""
    backends = sorted({m.partition(".")[0] for group in (
        extras.LUCENE, extras.DENSE, extras.ENCODERS, extras.GRAPH, extras.BANDIT,
        extras.RANKERS, extras.SERVE, extras.PLOTS, extras.SIMULATE) for m in group})
    code = ("import sys\nfrom ltrr.compiler import load_plan\n"
            "load_plan('pipelines/music-bandit.yaml')\n"
            f"print(sorted(m for m in {backends!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

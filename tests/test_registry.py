"""Plugin discovery: entry points, duplicate names, bad plugins, disabling, tracing."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import tiny_spec

from ltrr.components import Kind, Ranker
from ltrr.errors import PluginError
from ltrr.hookspecs import hookimpl
from ltrr.registry import build_registry


class OtherScore(Ranker):
    """A second ranker claiming the built-in name 'score'."""

    name = "score"


def test_builtins_register_through_the_ltrr_entry_points():
    reg = build_registry()
    for kind, name in [(Kind.ARM, "bm25"), (Kind.ARM, "entity_lookup"),
                       (Kind.SLOTTER, "dictionary"), (Kind.POLICY, "static"),
                       (Kind.MERGER, "union"), (Kind.MERGER, "rrf"), (Kind.RANKER, "score")]:
        found = reg.find(kind, name)
        assert found is not None, name
        assert found.package == "ltrr" and found.summary


def test_two_packages_registering_one_name_is_an_error_naming_both():
    dup = SimpleNamespace(ltrr_components=hookimpl(lambda: [OtherScore]))
    with pytest.raises(PluginError) as err:
        build_registry(extra=[("my-scores", dup)])
    text = str(err.value)
    assert "ranker 'score' is registered twice" in text
    assert "package 'ltrr'" in text and "plugin 'my-scores'" in text


def test_a_plugin_returning_a_non_component_is_rejected_with_its_name():
    bad = SimpleNamespace(ltrr_components=hookimpl(lambda: [dict]))
    with pytest.raises(PluginError, match="plugin 'junk'.*not a Slotter, Arm"):
        build_registry(extra=[("junk", bad)])


def test_a_failing_plugin_hook_names_the_plugin():
    def boom():
        raise RuntimeError("no GPU")

    with pytest.raises(PluginError, match="plugin 'gpu-arms'.*RuntimeError: no GPU"):
        build_registry(extra=[("gpu-arms", SimpleNamespace(ltrr_components=hookimpl(boom)))])


def test_an_unmarked_hook_function_is_an_error_not_a_silent_registration():
    with pytest.raises(PluginError, match="without @hookimpl"):
        build_registry(extra=[("forgetful", SimpleNamespace(ltrr_components=lambda: []))])


def test_disabled_plugins_are_not_loaded(monkeypatch):
    monkeypatch.setenv("LTRR_DISABLE_PLUGINS", "rrf,weighted")
    reg = build_registry()
    assert reg.find(Kind.MERGER, "rrf") is None and reg.find(Kind.MERGER, "weighted") is None
    assert reg.find(Kind.ARM, "bm25") is not None


@pytest.mark.parametrize("name", ["static", "union", "score"])
def test_the_spec_defaults_cannot_be_disabled(monkeypatch, name):
    """`static`, `union` and `score` are what a spec runs when it names no policy, merger
    or ranker: disabling one used to leave every such spec failing to compile."""
    monkeypatch.setenv("LTRR_DISABLE_PLUGINS", f"rrf,{name}")
    with pytest.raises(PluginError, match=f"default .* '{name}'.*LTRR_DISABLE_PLUGINS") as err:
        build_registry()
    assert "remove" in err.value.hint


def test_components_and_user_models_share_one_registration_type():
    from ltrr.registry import USER_MODEL, Registration

    reg = build_registry()
    lastfm = reg.find(USER_MODEL, "lastfm")
    assert isinstance(lastfm, Registration) and isinstance(reg.find(Kind.ARM, "bm25"),
                                                            Registration)
    assert reg.user_models == {"lastfm": lastfm,
                               "interactions": reg.find(USER_MODEL, "interactions")}
    assert all(r.kind in list(Kind) for r in reg.all())     # components only


def test_ltrr_trace_prints_hook_calls_and_node_timings(tmp_path):
    spec = tiny_spec(tmp_path)
    ltrr = os.path.join(os.path.dirname(sys.executable), "ltrr")
    done = subprocess.run([ltrr, "run", str(spec), "-q", "x", "--format", "jsonl"],
                          capture_output=True, text=True, env={**os.environ, "LTRR_TRACE": "1"})
    assert done.returncode == 0, done.stderr
    assert "ltrr_components" in done.stderr          # hook calls
    assert "ltrr_decision_made" in done.stderr
    assert "node timings" in done.stderr and "names=" in done.stderr

"""A corpus of broken specs, each with one mistake, and the error each must produce.

The corpus lives in tests/specs/broken/ (NN-short-name.yaml) with the expected
errors in tests/specs/broken/expected.yaml. Everything here validates and
compiles only: no index is built, no JVM is started.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ltrr.compiler import compile_spec
from ltrr.errors import CompileError, LtrrError, SpecError
from ltrr.registry import default_registry
from ltrr.spec import load_spec, load_spec_text

REPO = Path(__file__).resolve().parent.parent
BROKEN = REPO / "tests" / "specs" / "broken"
EXPECTED: dict[str, dict] = yaml.safe_load((BROKEN / "expected.yaml").read_text())
ERROR_TYPES = {"SpecError": SpecError, "CompileError": CompileError}


def _ltrr() -> list[str]:
    script = Path(sys.executable).parent / "ltrr"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ltrr.cli"]


def _substrings(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _location(file: str, case: dict) -> str:
    if case["line"] is None:
        return file
    if case["column"] is None:
        return f"{file}:{case['line']}"
    return f"{file}:{case['line']}:{case['column']}"


def _failure(path: Path, case: dict, request) -> LtrrError:
    registry = (request.getfixturevalue("seeded_registry") if case.get("registry") == "seeded"
                else default_registry())
    with pytest.raises(LtrrError) as info:
        compile_spec(load_spec(path), registry)
    return info.value


# --- the corpus itself ------------------------------------------------------------------

def test_corpus_is_complete():
    files = sorted(p.name for p in BROKEN.glob("*.yaml") if p.name != "expected.yaml")
    assert len(files) >= 18
    present = {name for name, case in EXPECTED.items() if case.get("exists", True)}
    assert set(files) == present, "every broken spec needs an entry in expected.yaml"
    for name, case in EXPECTED.items():
        assert (BROKEN / name).exists() == case.get("exists", True), name
        assert case["error"] in ERROR_TYPES, name
        assert {"line", "column", "node", "field", "message", "hint"} <= set(case), name


def test_every_broken_spec_says_what_is_wrong():
    """Each spec opens with a comment naming its one mistake (the corpus doubles as docs)."""
    for name, case in EXPECTED.items():
        if not case.get("exists", True):
            continue
        text = (BROKEN / name).read_text()
        assert text.startswith("#"), f"{name}: start with a comment saying what is wrong"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_spec(name, request):
    case = EXPECTED[name]
    path = BROKEN / name
    err = _failure(path, case, request)

    assert type(err) is ERROR_TYPES[case["error"]], f"{name}: {err}"
    location = _location(str(path), case)
    assert str(err.where) == location
    assert err.node == case["node"]
    assert err.field == case["field"]
    for part in _substrings(case["message"]):
        assert part in err.message, f"{name}: {part!r} not in {err.message!r}"
    if case["hint"] is None:
        assert err.hint is None, f"{name}: unexpected hint {err.hint!r}"
    else:
        assert err.hint, f"{name}: expected a hint"
        for part in _substrings(case["hint"]):
            assert part in err.hint, f"{name}: {part!r} not in {err.hint!r}"

    # One mistake, one error: nothing else is reported alongside it.
    assert err.also == []
    rendered = str(err)
    assert "\n" not in rendered
    assert rendered.startswith(location + ":")
    if err.node:
        assert f"node '{err.node}'" in rendered
    if err.field:
        assert f"field '{err.field}'" in rendered
    if err.hint:
        assert rendered.endswith(f"(hint: {err.hint})")
    assert "Traceback" not in rendered


def test_seeded_cases_compile_once_fixed(seeded_registry):
    """The seeded test arm really takes seeds: without the mistake, the plan compiles."""
    text = (BROKEN / "13-cycle.yaml").read_text().replace(
        "from: [lexical, similar]", "from: [lexical]")
    plan = compile_spec(load_spec_text(text, BROKEN / "fixed.yaml"), seeded_registry)
    assert [a.id for a in plan.arms] == ["lexical", "neighbours", "similar"]
    assert plan.upstream("similar") == ["neighbours"]
    assert plan.graph.edges["lexical", "neighbours"]["port"] == "seeds"


# --- through the real command line ------------------------------------------------------

CLI_CASES = sorted(name for name, case in EXPECTED.items()
                   if case.get("cli") and case.get("registry") != "seeded")


def test_enough_cli_cases():
    assert len(CLI_CASES) >= 4


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_validate_reports_one_error_line(name):
    case = EXPECTED[name]
    rel = f"tests/specs/broken/{name}"
    proc = subprocess.run([*_ltrr(), "validate", rel], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {_location(rel, case)}: "), lines[0]
    for part in _substrings(case["message"]):
        assert part in lines[0]


def test_cli_validate_accepts_the_music_pipeline():
    proc = subprocess.run([*_ltrr(), "validate", "pipelines/music.yaml"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: pipelines/music.yaml: pipeline 'music'")
    assert "Traceback" not in proc.stderr


def test_validate_loads_nothing_heavy():
    """Compiling a plan imports component classes but never the JVM bridge or torch."""
    code = ("import sys; from ltrr.compiler import load_plan; load_plan('pipelines/music.yaml'); "
            "heavy = sorted(m for m in ('jnius', 'pyserini', 'torch') if m in sys.modules); "
            "print(','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""

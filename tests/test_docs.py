"""The docs stay true: generated references match the code, shipped specs compile,
full specs shown in the docs compile, and relative links point at existing files.

Nothing here builds an index or starts the JVM.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from ltrr.compiler import compile_spec, load_plan
from ltrr.registry import default_registry
from ltrr.spec import load_spec_text

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_spec_reference", REPO / "scripts" / "gen_spec_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> dict[Path, str]:
    return _generator().expected_files()


@pytest.mark.parametrize("name", ["spec-reference.md", "plugins.md"])
def test_generated_docs_are_current(generated, name):
    path = DOCS / name
    assert path.read_text(encoding="utf-8") == generated[path], (
        f"docs/{name} is out of date: run .venv/bin/python scripts/gen_spec_reference.py")


def test_spec_reference_covers_every_key_and_builtin(generated):
    from ltrr.spec.models import PipelineSpec

    text = generated[DOCS / "spec-reference.md"]
    for name, field in PipelineSpec.model_fields.items():
        assert f"| `{field.alias or name}` |" in text
    for r in default_registry().all():
        if r.package == "ltrr":
            assert f"### {r.kind.value} `{r.name}`" in text
    for r in default_registry().all():     # third-party components never leak in
        if r.package != "ltrr":
            assert f"`{r.name}`" not in text


@pytest.mark.parametrize("spec", sorted(p for p in [*(REPO / "pipelines").glob("*.yaml"),
                                                   *(REPO / "examples/movies").glob("movies*.yaml")]
                                        if not p.name.startswith(".")),   # bench temp copies
                         ids=lambda p: p.name)
def test_every_shipped_pipeline_compiles(spec):
    """Every spec compiles; its data checks pass where its data is (the SciFact specs read
    ../shared, which a user's machine lacks: there, a located error names the file)."""
    from ltrr.data_checks import check_data
    from ltrr.errors import DataError

    plan = load_plan(spec, check_data=False)
    assert plan.arms
    if plan.spec.resolve(plan.model.catalog.path).exists():
        check_data(plan)
    else:
        with pytest.raises(DataError, match="catalog file not found") as err:
            check_data(plan)
        assert err.value.where.file == str(spec) and err.value.field == "path"


def _yaml_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1))
            for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M)]


FULL_SPECS = [(path, line, block) for path in sorted(DOCS.rglob("*.md"))
              for line, block in _yaml_blocks(path)
              if isinstance(data := yaml.safe_load(block), dict) and {"name", "arms"} <= set(data)]


@pytest.mark.parametrize("path,line,block", FULL_SPECS,
                         ids=[f"{p.name}:{n}" for p, n, _ in FULL_SPECS])
def test_full_specs_in_docs_compile(path, line, block, tmp_path):
    compile_spec(load_spec_text(block, tmp_path / f"{path.stem}-{line}.yaml"))


def test_quickstart_shows_a_full_spec():
    assert any(p.name == "quickstart.md" for p, _, _ in FULL_SPECS)


def _anchors(path: Path) -> set[str]:
    """Heading slugs as GitHub makes them, plus explicit ``<a id="...">`` anchors."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
             for h in re.findall(r"^#+ (.+)$", text, re.M)}
    return slugs | set(re.findall(r'<a id="([^"]+)">', text))


@pytest.mark.parametrize("path", sorted(DOCS.rglob("*.md")), ids=lambda p: str(p.relative_to(DOCS)))
def test_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, fragment = target.partition("#")
        dest = path.parent / file if file else path
        if not dest.exists() or (fragment and dest.suffix == ".md"
                                 and fragment not in _anchors(dest)):
            broken.append(target)
    assert not broken, f"{path.name} has broken links: {broken}"

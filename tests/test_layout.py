"""The source tree keeps its rules: only the CLI package prints (the runtime, evaluation,
OPE and simulation return data), and the core never imports the built-in plugins."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
#: ``ltrr serve``'s lifecycle lines (listening on..., stopped) are the server process's
#: own console; LTRR_TRACE's writers are a debugging aid.
ALLOWED = {"ltrr/serve/server.py", "ltrr/serve/supervisor.py", "ltrr/serve/worker.py"}
TRACE = "[ltrr trace]"


def _prints(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        target = ast.unparse(f)
        if name in ("print", "Console") or target in ("sys.stdout.write", "sys.stderr.write"):
            if TRACE not in ast.unparse(node):
                lines.append(node.lineno)
    return lines


def test_only_the_cli_prints():
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("ltrr/cli/") or rel in ALLOWED:
            continue
        if lines := _prints(ast.parse(path.read_text(encoding="utf-8"))):
            found[rel] = lines
    assert found == {}, "print outside ltrr/cli (return data and show it in ltrr.cli.output)"


def test_the_core_never_imports_the_built_in_plugins():
    found = {}
    for path in sorted((SRC / "ltrr").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "ltrr_plugins" for n in names):
                found.setdefault(path.relative_to(SRC).as_posix(), []).append(node.lineno)
    assert found == {}


MAX_LINES = 450


def test_big_modules_say_why_they_are_kept_whole():
    """A module over ~450 lines is split into a folder whose file names say their jobs,
    or its docstring says why it is kept whole ("Kept whole: ...")."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n = text.count("\n")
        if n > MAX_LINES and "Kept whole:" not in (ast.get_docstring(ast.parse(text)) or ""):
            found[path.relative_to(SRC).as_posix()] = n
    assert found == {}


def test_no_import_cycles_even_through_imports_inside_functions():
    """Dependencies point one way (server and supervisor imported each other's private
    helpers inside functions). Imports under ``if TYPE_CHECKING`` do not count."""
    import networkx as nx

    modules = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        modules[".".join(parts)] = path

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    def imports(tree: ast.AST):
        for node in ast.iter_child_nodes(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                yield from (a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                yield node.module
                yield from (f"{node.module}.{a.name}" for a in node.names)
            yield from imports(node)

    graph = nx.DiGraph()
    for name, path in modules.items():
        for target in imports(ast.parse(path.read_text(encoding="utf-8"))):
            dep = owner(target)
            if dep and dep != name and not name.startswith(dep + "."):
                graph.add_edge(name, dep)
    assert sorted(nx.simple_cycles(graph)) == []

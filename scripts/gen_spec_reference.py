"""Generate docs/spec-reference.md and the hook reference in docs/plugins.md from the code.

Nothing in the generated text is written by hand:

- every section and key of a pipeline spec comes from the pydantic models in
  ``ltrr.spec.models`` (``model_fields``: alias, type, constraints, default, description);
- every built-in component comes from ``ltrr.registry.build_registry()``, keeping only
  the components of the ``ltrr`` distribution (third-party plugins installed in the same
  environment are not loaded, so the output does not depend on what else is installed);
  its summary, module docstring, ``Params`` fields and ``seed_types`` are read from the class;
- the hook reference (between the ``BEGIN``/``END GENERATED hooks`` markers of
  docs/plugins.md) comes from the docstrings in ``src/ltrr/hookspecs.py``.

Usage (from the repo root)::

    .venv/bin/python scripts/gen_spec_reference.py            # rewrite the generated docs
    .venv/bin/python scripts/gen_spec_reference.py --check    # exit 1 if they are out of date

tests/test_docs.py runs the same comparison as ``--check``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import re
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

REPO = Path(__file__).resolve().parents[1]
SPEC_REFERENCE = REPO / "docs" / "spec-reference.md"
PLUGINS_GUIDE = REPO / "docs" / "plugins.md"
HOOKS_BEGIN = "<!-- BEGIN GENERATED hooks (scripts/gen_spec_reference.py) -->"
HOOKS_END = "<!-- END GENERATED hooks -->"
PACKAGE = "ltrr"          # the distribution whose components are documented


# --- docstrings → Markdown -----------------------------------------------------------------

_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_DOUBLE = re.compile(r"``([^`]+)``")


def _inline(text: str) -> str:
    """reST inline markup to Markdown: ``x`` → `x`, :class:`~a.B` → `B`."""
    text = _ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`",
                     text)
    return _DOUBLE.sub(r"`\1`", text)


def doc_to_markdown(doc: str | None) -> str:
    """A docstring as Markdown: inline markup converted, ``::`` blocks fenced."""
    if not doc:
        return ""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            intro = line.rstrip()[:-2].rstrip()
            if intro:
                out.append(_inline(intro) + ":")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            code = textwrap.dedent("\n".join(block))
            lang = "toml" if code.lstrip().startswith("[") else (
                "yaml" if re.match(r"^\w[\w-]*:( |$)", code) else "python")
            out += ["", f"```{lang}", code, "```", ""]
            continue
        out.append(_inline(line))
        i += 1
    return "\n".join(out).strip()


# --- types, constraints and defaults --------------------------------------------------------

def _models_in(ann: Any) -> list[tuple[type[BaseModel], str]]:
    """Pydantic models inside an annotation, with the path suffix leading to them
    (``""`` for ``X``, ``"[]"`` for ``list[X]``, ``".<key>"`` for ``dict[str, X]``)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [(ann, "")]
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin is list:
        return [(m, "[]" + s) for m, s in _models_in(args[0])] if args else []
    if origin is dict:
        return [(m, ".<key>" + s) for m, s in _models_in(args[1])] if len(args) == 2 else []
    return [found for arg in args for found in _models_in(arg)]


def type_text(ann: Any, link: dict[type, str]) -> str:
    """A readable type: `str`, list of `str`, mapping of `str` to `float`, ..."""
    if ann is type(None):
        return "`null`"
    if ann is Any:
        return "any"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"[{ann.__name__}](#{link[ann]})" if ann in link else f"`{ann.__name__}`"
    if isinstance(ann, type):
        return f"`{ann.__name__}`"
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return type_text(args[0], link)
    if origin is typing.Literal:
        return " or ".join(f"`{_yaml(a)}`" for a in args)
    if origin is list:
        return f"list of {type_text(args[0], link)}" if args else "list"
    if origin is dict:
        if len(args) == 2 and args[1] is not Any:
            return f"mapping of {type_text(args[0], link)} to {type_text(args[1], link)}"
        return "mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a, link) for a in args)
    return f"`{ann}`"


def constraints(field: FieldInfo) -> list[str]:
    out = []
    for m in field.metadata:
        if isinstance(m, annotated_types.Gt):
            out.append(f"> {_yaml(m.gt)}")
        elif isinstance(m, annotated_types.Ge):
            out.append(f">= {_yaml(m.ge)}")
        elif isinstance(m, annotated_types.Lt):
            out.append(f"< {_yaml(m.lt)}")
        elif isinstance(m, annotated_types.Le):
            out.append(f"<= {_yaml(m.le)}")
        elif isinstance(m, annotated_types.MinLen):
            out.append(f"at least {m.min_length} {'entry' if m.min_length == 1 else 'entries'}"
                       if typing.get_origin(field.annotation) in (list, dict)
                       else "non-empty" if m.min_length == 1
                       else f"at least {m.min_length} characters")
        elif isinstance(m, annotated_types.MaxLen):
            out.append(f"at most {m.max_length}")
        elif getattr(m, "pattern", None):
            out.append(f"matches `{m.pattern}`")
    return out


def _yaml(value: Any) -> str:
    """A value in YAML flow style, as a spec author would write it."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        plain = value and re.fullmatch(r"[A-Za-z_./<>][\w./<>-]*", value) and value not in (
            "null", "true", "false", "yes", "no", "on", "off")
        return value if plain else '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    return f"`{_yaml(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def fields_table(model: type[BaseModel], link: dict[type, str]) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        kind = type_text(field.annotation, link)
        extra = constraints(field)
        if extra:
            kind += ", " + ", ".join(extra)
        description = field.description
        if not description:
            nested = _models_in(field.annotation)
            description = _first_line(nested[0][0].__doc__) if nested else ""
        rows.append(f"| `{key}` | {_cell(kind)} | {_cell(default_text(field))} | "
                    f"{_cell(_inline(description or '—'))} |")
    return rows


def _first_line(doc: str | None) -> str:
    return inspect.cleandoc(doc).splitlines()[0] if doc else ""


def _anchor(prefix: str, label: str) -> str:
    return prefix + "-" + re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def model_sections(root: type[BaseModel], root_label: str, prefix: str, level: str,
                   *, skip_root_heading: bool = False) -> list[str]:
    """Tables for ``root`` and, breadth first, for every model reachable from its fields."""
    queue: list[tuple[type[BaseModel], str]] = [(root, root_label)]
    seen: dict[type, str] = {}
    order: list[tuple[type[BaseModel], str]] = []
    while queue:
        model, label = queue.pop(0)
        if model in seen:
            continue
        seen[model] = _anchor(prefix, label or model.__name__)
        order.append((model, label))
        for name, field in model.model_fields.items():
            key = field.alias or name
            for nested, suffix in _models_in(field.annotation):
                queue.append((nested, f"{label}.{key}{suffix}".lstrip(".")))
    out: list[str] = []
    for i, (model, label) in enumerate(order):
        if not (i == 0 and skip_root_heading):
            out += [f'<a id="{seen[model]}"></a>', "",
                    f"{level} `{label}` ({model.__name__})" if label else f"{level} {model.__name__}",
                    ""]
        doc = doc_to_markdown(vars(model).get("__doc__"))    # its own docstring, not inherited
        if doc:
            out += [doc, ""]
        if model.model_fields:
            out += fields_table(model, seen) + [""]
        else:
            out += ["No keys.", ""]
    return out


# --- the built-in components -------------------------------------------------------------

def _dist_name(ep) -> str:
    return (ep.dist.metadata["Name"] if ep.dist else "").lower()


@contextlib.contextmanager
def only_builtin_plugins() -> Iterator[None]:
    """Disable, for the duration, every ``ltrr`` entry point of another distribution.

    ``build_registry`` then imports only ltrr's own plugin modules: a broken or
    half-installed third-party package cannot break the docs, and the user's own
    ``LTRR_DISABLE_PLUGINS`` cannot hide a built-in from them.
    """
    from ltrr.registry import GROUP

    eps = list(entry_points(group=GROUP))
    own = {ep.name for ep in eps if _dist_name(ep) == PACKAGE}
    others = {ep.name for ep in eps if _dist_name(ep) != PACKAGE} - own
    saved = os.environ.get("LTRR_DISABLE_PLUGINS")
    os.environ["LTRR_DISABLE_PLUGINS"] = ",".join(sorted(others))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LTRR_DISABLE_PLUGINS", None)
        else:
            os.environ["LTRR_DISABLE_PLUGINS"] = saved


def builtin_registrations():
    from ltrr.registry import build_registry

    with only_builtin_plugins():
        registry = build_registry()
    regs = [r for r in registry.all() if r.package.lower() == PACKAGE]
    if not regs:
        raise SystemExit("no built-in component registered: is ltrr installed in this "
                         "environment? (`pip install -e .` from the repo root)")
    return regs


def _source_path(module: str) -> str | None:
    """Repo-relative source file of ``module`` (src layout: folder = import name)."""
    base = Path("src", *module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if (REPO / path).exists():
            return path.as_posix()
    return None


def component_sections() -> list[str]:
    from ltrr.components import Arm, Indexed

    regs = builtin_registrations()
    out = ["## Built-in components", "",
           "Registered by the `ltrr` package through its `ltrr` entry points, exactly as a "
           "third-party plugin registers (see [plugins.md](plugins.md)). A node names one with "
           "`use:` and sets its parameters under `with:`; unknown parameters are errors.", "",
           "| kind | name | summary |", "|---|---|---|"]
    anchors = {}
    for r in regs:
        anchors[r] = _anchor("component", f"{r.kind.value}-{r.name}")
        out.append(f"| {r.kind.value} | [`{r.name}`](#{anchors[r]}) | {_cell(_inline(r.summary))} |")
    out.append("")
    ports = {"slots": "slots of a slotter", "candidates": "candidates of an arm"}
    for r in regs:                      # Registry.all() orders by kind, then name
        cls = r.cls
        out += [f'<a id="{anchors[r]}"></a>', "", f"### {r.kind.value} `{r.name}`", "",
                _inline(r.summary), ""]
        source = _source_path(cls.__module__)
        out.append(f"- class: `{cls.__module__}.{cls.__qualname__}`"
                   + (f" ([source](../{source}))" if source else ""))
        out.append("- keeps state built by `ltrr index`: "
                   + ("yes, in `<state_dir>/<node id>/`" if issubclass(cls, Indexed) else "no"))
        if issubclass(cls, Arm):
            seeds = sorted(cls.seed_types)
            out.append("- accepts `from:` seeds: " + (
                "yes — " + ", ".join(f"`{s}` ({ports.get(s, s)})" for s in seeds)
                if seeds else "no"))
        out.append("")
        module_doc = doc_to_markdown(sys.modules[cls.__module__].__doc__)
        if module_doc:
            out += [module_doc, ""]
        params = cls.Params
        if params.model_fields:
            out += [f"Parameters (`with:`), model `{params.__name__}`:", ""]
            out += model_sections(params, "with", _anchor("params", r.name), "####",
                                  skip_root_heading=True)
        else:
            out += ["No parameters: omit `with:` (or leave it empty).", ""]
    return out


# --- the whole reference ------------------------------------------------------------------

def render_spec_reference() -> str:
    from ltrr.compiler import RESERVED_IDS
    from ltrr.spec.models import PipelineSpec

    out = ["# Spec reference", "",
           "<!-- Generated by scripts/gen_spec_reference.py from src/ltrr/spec/models.py and the "
           "built-in components; do not edit by hand. -->", "",
           "A pipeline spec is one YAML file. Unknown keys are errors everywhere, paths are "
           "relative to the spec file, and every error names `file:line:column`, the node and "
           "the field. `ltrr schema` prints the same information as JSON Schema; "
           "`ltrr schema --components` adds every registered component's parameters.", "",
           f"Node ids (`id:` of slotters and arms) are unique across the spec; "
           f"{', '.join(f'`{i}`' for i in RESERVED_IDS)} are reserved.", "",
           "## Pipeline spec", ""]
    out += model_sections(PipelineSpec, "", "spec", "###", skip_root_heading=True)
    out += component_sections()
    return "\n".join(out).rstrip() + "\n"


def render_hooks() -> str:
    """The hook reference: one section per phase banner of src/ltrr/hookspecs.py."""
    from ltrr import hookspecs

    source = inspect.getsource(hookspecs).splitlines()
    banners = [(n, m.group(1).strip()) for n, line in enumerate(source, 1)
               if (m := re.match(r"^# -+ (.+?) -+$", line))]
    hooks = sorted(((inspect.getsourcelines(fn)[1], name, fn)
                    for name, fn in vars(hookspecs).items()
                    if callable(fn) and hasattr(fn, "ltrr_spec")), key=lambda t: t[0])
    out: list[str] = []
    phase = None
    for line, name, fn in hooks:
        here = next((title for n, title in reversed(banners) if n < line), "hooks")
        if here != phase:
            phase = here
            out += [f"### {phase.capitalize()}", ""]
        sig = inspect.signature(fn)
        params = ", ".join(f"{p.name}: {p.annotation}" if p.annotation is not p.empty else p.name
                           for p in sig.parameters.values())
        ret = sig.return_annotation if sig.return_annotation is not sig.empty else "None"
        opts = fn.ltrr_spec
        mode = ("the first non-`None` result wins" if opts.get("firstresult")
                else "every implementation is called")
        if opts.get("historic"):
            mode += "; historic (replayed to plugins registered later)"
        out += [f"#### `{name}({params}) -> {ret}`", "", f"*{mode.capitalize()}.*", "",
                doc_to_markdown(fn.__doc__), ""]
    return "\n".join(out).rstrip() + "\n"


def splice(document: str, block: str) -> str:
    """``document`` with the text between the hook markers replaced by ``block``."""
    start, end = document.find(HOOKS_BEGIN), document.find(HOOKS_END)
    if start < 0 or end < start:
        raise SystemExit(f"{PLUGINS_GUIDE.relative_to(REPO)} lacks the markers "
                         f"{HOOKS_BEGIN!r} ... {HOOKS_END!r}")
    return document[:start + len(HOOKS_BEGIN)] + "\n\n" + block + "\n" + document[end:]


def expected_files() -> dict[Path, str]:
    """Each generated file with the text it must hold."""
    return {SPEC_REFERENCE: render_spec_reference(),
            PLUGINS_GUIDE: splice(PLUGINS_GUIDE.read_text(encoding="utf-8"), render_hooks())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected_files().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    if args.check and stale:
        for path in stale:
            print(f"out of date: {path.relative_to(REPO)}", file=sys.stderr)
        print("run: .venv/bin/python scripts/gen_spec_reference.py", file=sys.stderr)
        return 1
    if not stale:
        print("generated docs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Safe YAML loading that remembers where every value came from.

:func:`load_yaml` returns plain Python data plus a :class:`SourceMap` from value
paths (``("arms", 0, "with", "k1")``) to file positions, so that errors found
later — by pydantic, the compiler or a component — can name ``file:line:column``.
Only YAML's safe types are accepted; ``!!python/...`` tags are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ltrr.errors import Location, SpecError

PathKey = tuple[str | int, ...]


@dataclass
class SourceMap:
    """Positions of values (and of mapping keys) in one YAML file."""

    file: str
    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: PathKey, *, key: bool = False) -> Location:
        """Best location for ``path``: the exact node, else its nearest ancestor."""
        table = self.keys if key else self.values
        p = tuple(path)
        while p:
            if p in table:
                line, col = table[p]
                return Location(self.file, line, col)
            if p in self.values:
                line, col = self.values[p]
                return Location(self.file, line, col)
            p = p[:-1]
        if () in self.values:
            line, col = self.values[()]
            return Location(self.file, line, col)
        return Location(self.file)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _convert(node: yaml.Node, path: PathKey, smap: SourceMap, loader: yaml.SafeLoader) -> Any:
    smap.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int)):
                line, col = _mark(key_node)
                raise SpecError("mapping keys must be plain strings",
                                where=Location(smap.file, line, col))
            key = str(key)
            if key in out:
                line, col = _mark(key_node)
                first = smap.keys[path + (key,)]
                raise SpecError(f"duplicate key '{key}' (first defined on line {first[0]})",
                                where=Location(smap.file, line, col),
                                hint="remove one of the two entries")
            smap.keys[path + (key,)] = _mark(key_node)
            out[key] = _convert(value_node, path + (key,), smap, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(child, path + (i,), smap, loader) for i, child in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_yaml_text(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse YAML text; return ``(data, source_map)``. Raises :class:`SpecError`."""
    smap = SourceMap(file)
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise SpecError("the spec is empty", where=Location(file, 1, 1),
                            hint="start from a file in pipelines/ or run `ltrr schema`")
        return _convert(root, (), smap, loader), smap
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in str(exc):
            problem = "YAML tags such as !!python/... are not allowed in specs"
        raise SpecError(f"YAML syntax error: {problem}", where=where,
                        hint="check indentation and quoting around this position") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML error: {exc}", where=Location(file)) from None
    finally:
        loader.dispose()


def load_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Read and parse a YAML spec file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("spec file not found", where=Location(str(path)),
                        hint="check the path; specs usually live in pipelines/") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec: {exc}", where=Location(str(path))) from None
    return load_yaml_text(text, str(path))

"""Safe YAML loading that remembers where every value came from.

:func:`load_yaml` returns plain Python data plus a :class:`SourceMap` from value
paths (``("arms", 0, "with", "k1")``) to file positions, so that errors found
later — by pydantic, the compiler or a component — can name ``file:line:column``.
Only YAML's safe types are accepted; ``!!python/...`` tags are rejected.
"""

from __future__ import annotations

import re
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


_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = {yaml.MappingNode: yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
               yaml.SequenceNode: yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG}


def _tag_error(tag: str, where: Location) -> SpecError:
    shown = tag.replace("tag:yaml.org,2002:", "!!", 1)
    return SpecError(f"YAML tag '{shown}' is not allowed in specs", where=where,
                     hint="specs hold only plain mappings, lists, strings, numbers and booleans; "
                          "remove the tag")


def _key(key_node: yaml.Node, smap: SourceMap, loader: yaml.SafeLoader) -> str:
    """A mapping key as written: ``no:`` stays 'no', ``0x10:`` stays '0x10'."""
    key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) \
        else None
    if key is None or not isinstance(key, (str, int, float)):
        line, col = _mark(key_node)
        raise SpecError("mapping keys must be plain strings",
                        where=Location(smap.file, line, col))
    return key if isinstance(key, str) else str(key_node.value)


def _convert(node: yaml.Node, path: PathKey, smap: SourceMap, loader: yaml.SafeLoader) -> Any:
    smap.values[path] = _mark(node)
    if type(node) in _PLAIN_TAGS and node.tag != _PLAIN_TAGS[type(node)]:
        # The safe constructor is only ever asked about scalars here, so tags on
        # mappings and sequences (!!python/object:..., !!set, !foo) must be refused
        # explicitly — otherwise they would be silently dropped.
        raise _tag_error(node.tag, Location(smap.file, *_mark(node)))
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        # Keys written in this mapping (not brought in by a ``<<: *anchor`` merge); they
        # may override merged keys, but not each other. Remembered on the node because
        # an aliased mapping is converted once per alias and is flattened already then.
        own = getattr(node, "_ltrr_own_keys", None)
        if own is None:
            own = {id(k) for k, _ in node.value if k.tag != _MERGE_TAG}
            node._ltrr_own_keys = own  # type: ignore[attr-defined]
        loader.flatten_mapping(node)
        own_seen: set[str] = set()
        for key_node, value_node in node.value:
            key = _key(key_node, smap, loader)
            is_own = id(key_node) in own
            if is_own and key in own_seen:
                line, col = _mark(key_node)
                first = smap.keys[path + (key,)]
                raise SpecError(f"duplicate key '{key}' (first defined on line {first[0]})",
                                where=Location(smap.file, line, col),
                                hint="remove one of the two entries")
            if is_own:
                own_seen.add(key)
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
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
            raise SpecError("the spec is empty", where=Location(file, 1, 1),
                            hint="start from a file in pipelines/ or run `ltrr schema`")
        return _convert(root, (), smap, loader), smap
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in str(exc):
            found = re.search(r"tag '([^']*)'", exc.problem or "")
            raise _tag_error(found.group(1) if found else "?", where) from None
        if exc.problem == "but found another document":
            raise SpecError("a second YAML document starts here; a spec file holds exactly one",
                            where=where, hint="remove this '---' line, or put the second "
                                              "pipeline in a file of its own") from None
        if exc.context and exc.context_mark and exc.problem_mark \
                and exc.context_mark.line != exc.problem_mark.line:
            problem += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        hint = ("indent with spaces: YAML does not allow tabs" if "'\\t'" in problem
                else "check indentation and quoting around this position")
        raise SpecError(f"YAML syntax error: {problem}", where=where, hint=hint) from None
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

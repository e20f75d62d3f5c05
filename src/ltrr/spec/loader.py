"""Safe YAML loading that remembers where every value came from.

:func:`load_yaml` returns plain Python data plus a :class:`SourceMap` from value
paths (``("arms", 0, "with", "k1")``) to file positions, so that errors found
later — by pydantic, the compiler or a component — can name ``file:line:column``.
Only YAML's safe types are accepted; ``!!python/...`` tags are rejected.

Loading is bounded, so a hostile spec is a located error rather than a hang, a
``RecursionError`` or gigabytes of memory: at most :data:`MAX_SPEC_BYTES` of text,
:data:`MAX_DEPTH` levels of nesting and :data:`MAX_VALUES` values once aliases are
expanded (a "billion laughs" file of 1 KB held 490 million), and numbers of at most
:data:`MAX_NUMBER_CHARS` characters (Python refuses to convert 4,300 digits and more).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ltrr.errors import Location, SpecError
from ltrr.files import check_file, read_bytes

PathKey = tuple[str | int, ...]

MAX_SPEC_BYTES = 1_000_000      # the pipelines in pipelines/ are 1-4 KB
MAX_DEPTH = 64                  # they nest 6 levels
MAX_VALUES = 20_000             # after alias expansion; they hold a few hundred
MAX_NUMBER_CHARS = 100


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


def _at(file: str, mark: yaml.Mark) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


def _too_deep(where: Location) -> SpecError:
    return SpecError(f"the spec is nested deeper than {MAX_DEPTH} levels here", where=where,
                     hint="a spec needs a few levels of mappings and lists; check for "
                          "unclosed brackets or aliases (*name) inside aliased values")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, composing no deeper than :data:`MAX_DEPTH` (its composer
    recurses per level and hit Python's recursion limit at about 330) nor beyond
    :data:`MAX_VALUES` values (composing 100,000 took 5 s), and noting for
    messages each anchored node's name and where an alias stands in a list."""

    def __init__(self, text: str, file: str):
        super().__init__(text)
        self.file = file
        self.alias_marks: dict[tuple[int, int], yaml.Mark] = {}   # (id(list), index)
        self._depth = 0
        self._count = 0

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if isinstance(index, int):
                self.alias_marks[(id(parent), index)] = event.start_mark
            return super().compose_node(parent, index)
        self._depth += 1
        self._count += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _too_deep(_at(self.file, event.start_mark))
            if self._count > MAX_VALUES:
                raise SpecError(f"the spec holds more than {MAX_VALUES:,} values",
                                where=_at(self.file, event.start_mark),
                                hint="a spec describes a pipeline; keep data in files it names")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if event.anchor is not None:
            node._ltrr_anchor = event.anchor  # type: ignore[attr-defined]
        return node


def _children(node: yaml.Node, loader: _Loader) -> list[tuple[yaml.Node, yaml.Mark]]:
    """``(child, where it is written)``: a mapping value by its key, an alias by itself."""
    if isinstance(node, yaml.MappingNode):
        return [pair for k, v in node.value for pair in ((k, k.start_mark), (v, k.start_mark))]
    if isinstance(node, yaml.SequenceNode):
        marks = loader.alias_marks
        return [(child, marks.get((id(node), i), child.start_mark))
                for i, child in enumerate(node.value)]
    return []


def _check_expansion(root: yaml.Node, loader: _Loader) -> None:
    """Bound the tree that converting ``root`` will build, before building it.

    Aliases share nodes, so the composed graph is small even when its expansion is
    huge (or endless, for an alias inside its own anchor). One pass without recursion
    over the distinct nodes computes each one's expanded size and height.
    """
    file = loader.file
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            kids = [child for child, _ in _children(node, loader)]
            size[key] = 1 + sum(size[id(c)] for c in kids)
            height[key] = 1 + max((height[id(c)] for c in kids), default=0)
            continue
        if key in size:
            continue
        active.add(key)
        stack.append((node, True))
        for child, mark in _children(node, loader):
            if id(child) in active:
                name = getattr(child, "_ltrr_anchor", "?")
                raise SpecError(f"alias '*{name}' is used inside the value it names",
                                where=_at(file, mark),
                                hint="an alias may only repeat a value defined before it, "
                                     "outside it")
            if id(child) not in size:
                stack.append((child, False))
    if height[id(root)] > MAX_DEPTH:
        node = root                         # follow the deepest path to level MAX_DEPTH + 1
        for _ in range(MAX_DEPTH):
            node, mark = next((c, m) for c, m in _children(node, loader)
                              if height[id(c)] == height[id(node)] - 1)
        raise _too_deep(_at(file, mark))
    if size[id(root)] > MAX_VALUES:
        node, mark = root, root.start_mark  # the smallest value over the limit, first in order
        while True:
            over = next(((c, m) for c, m in _children(node, loader) if size[id(c)] > MAX_VALUES),
                        None)
            if over is None:
                break
            node, mark = over
        raise SpecError(f"the spec expands to {size[id(root)]:,} values, more than the "
                        f"{MAX_VALUES:,} allowed; this value alone holds {size[id(node)]:,}",
                        where=_at(file, mark),
                        hint="YAML aliases (*name) repeat what their anchor holds each time "
                             "they are used; write the values out, or use fewer aliases")


_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


def _scalar(node: yaml.Node, file: str, loader: yaml.SafeLoader) -> Any:
    if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
        raise SpecError(f"a number of {len(node.value)} characters; at most "
                        f"{MAX_NUMBER_CHARS} are allowed", where=_at(file, node.start_mark),
                        hint="write a shorter number; quote it if it is text")
    return loader.construct_object(node, deep=True)


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
    key = _scalar(key_node, smap.file, loader) if isinstance(key_node, yaml.ScalarNode) \
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
    return _scalar(node, smap.file, loader)


def load_yaml_text(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse YAML text; return ``(data, source_map)``. Raises :class:`SpecError`."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec holds {len(text):,} characters; at most 1 MB is allowed",
                        where=Location(file), hint="a spec describes a pipeline; keep data in "
                                                   "files it names")
    smap = SourceMap(file)
    loader = _Loader(text, file)
    try:
        root = loader.get_single_node()
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
            raise SpecError("the spec is empty", where=Location(file, 1, 1),
                            hint="start from a file in pipelines/ or run `ltrr schema`")
        _check_expansion(root, loader)
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
    """Read and parse a YAML spec file: a regular file of at most :data:`MAX_SPEC_BYTES`."""
    where = Location(str(path))
    if not Path(path).exists():
        raise SpecError("spec file not found", where=where,
                        hint="check the path; specs usually live in pipelines/")
    check_file(Path(path), "spec", error=SpecError, max_bytes=MAX_SPEC_BYTES)
    try:
        raw = read_bytes(Path(path), MAX_SPEC_BYTES)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec: {exc}", where=where) from None
    return load_yaml_text(text, str(path))

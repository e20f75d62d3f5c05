"""One error hierarchy for everything a user can get wrong.

The CLI prints any :class:`LtrrError` as a single ``error:`` line (plus an optional
hint) and exits 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where in a spec file something is: file, 1-based line and column."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"


class LtrrError(Exception):
    """Base of every error ltrr reports to users.

    ``where`` names the place (a :class:`Location`, a node id, a request field),
    ``hint`` says how to fix it.
    """

    def __init__(self, message: str, *, where: Location | str | None = None,
                 node: str | None = None, field: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.node = node
        self.field = field
        self.hint = hint
        self.also: list[LtrrError] = []   # further independent errors found in the same pass
        super().__init__(message)

    def __str__(self) -> str:
        return "\n".join([self.render()] + [e.render() for e in self.also])

    def render(self) -> str:
        parts = []
        if self.where is not None:
            parts.append(f"{self.where}:")
        if self.node:
            parts.append(f"node '{self.node}'")
        if self.field:
            parts.append(f"field '{self.field}'")
        if self.node or self.field:
            text = " ".join(parts) + ": " + self.message   # file:1:2: node 'x' field 'y': msg
        else:
            text = " ".join(parts + [self.message])
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class SpecError(LtrrError):
    """The YAML spec is malformed or does not match the models."""


class CompileError(LtrrError):
    """The spec is well-formed but does not describe a runnable pipeline."""


class PluginError(LtrrError):
    """A plugin failed to load, or two plugins claim the same component name."""


class StateError(LtrrError):
    """Pipeline state (an index, a model, a log) is missing, stale or corrupt."""


class DataError(StateError):
    """A data file the spec names (catalog, relations, interactions) is missing,
    unreadable, or lacks a column the spec reads (a StateError: what state is built
    from)."""


class RunError(LtrrError):
    """Executing a plan failed in a way the user can act on (bad query file, ...)."""

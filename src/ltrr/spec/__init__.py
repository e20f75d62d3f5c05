"""Pipeline specs: YAML → validated :class:`PipelineSpec` with source positions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ltrr.errors import Location, SpecError
from ltrr.spec.errors import node_and_field, spec_errors
from ltrr.spec.loader import PathKey, SourceMap, load_yaml, load_yaml_text
from ltrr.spec.models import ArmSpec, PipelineSpec, SlotterSpec

def resolve_path(base: Path, path: str | Path) -> Path:
    """``path`` from a spec (``~`` expanded), resolved against ``base`` unless absolute."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path(base) / p).resolve()


__all__ = ["resolve_path", "Spec", "load_spec", "load_spec_text", "PipelineSpec", "ArmSpec", "SlotterSpec"]


#: The two logs of a state folder (a pipeline's own, or one given with ``--log``).
DECISIONS_DIR = "decisions"
EVENTS_DIR = "events"


@dataclass(frozen=True)
class Spec:
    """A validated spec with what is needed to report errors and resolve paths."""

    model: PipelineSpec
    data: dict[str, Any]
    source: SourceMap
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str | Path) -> Path:
        """A path from the spec, resolved against the spec file's folder."""
        return resolve_path(self.base_dir, relative)

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.model.state_dir or f".ltrr/{self.model.name}")

    @property
    def decisions_dir(self) -> Path:
        """Where the pipeline logs its decisions: ``log.path``, else
        ``<state_dir>/decisions``."""
        return self.resolve(self.model.log.path) if self.model.log.path \
            else self.state_dir / DECISIONS_DIR

    @property
    def events_dir(self) -> Path:
        """The pipeline's feedback event log, ``<state_dir>/events``."""
        return self.state_dir / EVENTS_DIR

    @cached_property
    def hash(self) -> str:
        """Stable short hash of the validated spec (versions state and decisions)."""
        blob = json.dumps(self.model.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def locate(self, path: PathKey, *, key: bool = False) -> Location:
        return self.source.locate(path, key=key)

    def error(self, cls: type[SpecError], message: str, path: PathKey, *,
              hint: str | None = None, key: bool = False) -> SpecError:
        """Build an error of ``cls`` located at ``path`` with its node id and field."""
        node, field = node_and_field(self.data, path)
        return cls(message, where=self.locate(path, key=key), node=node, field=field, hint=hint)


def _validate(data: Any, smap: SourceMap, path: Path) -> Spec:
    if not isinstance(data, dict):
        raise SpecError("a spec must be a mapping of keys (name, catalog, arms, policy, ...)",
                        where=smap.locate(()), hint="see pipelines/ for examples")
    try:
        model = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_errors(exc, root=PipelineSpec, data=data, smap=smap) from None
    return Spec(model=model, data=data, source=smap, path=path.resolve())


def load_spec(path: str | Path) -> Spec:
    """Load and validate a spec file. Raises :class:`SpecError` naming file:line:col."""
    data, smap = load_yaml(Path(path))
    return _validate(data, smap, Path(path))


def load_spec_text(text: str, path: str | Path = "<string>") -> Spec:
    """Load a spec from text; relative paths resolve against ``path``'s folder."""
    data, smap = load_yaml_text(text, str(path))
    return _validate(data, smap, Path(path))

"""pydantic models of a pipeline spec (the YAML a pipeline author writes).

Unknown keys are errors everywhere. Component parameters (``with:``) are kept as
plain mappings here and validated by the compiler against the params model of the
component the node ``use:``-s, so the spec layer needs no plugin loaded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

NodeId = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$",
                              description="Node id: a letter, then letters, digits, _ or -.")]
ComponentName = Annotated[str, Field(min_length=1, description="Registered component name.")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


TypeName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$",
                                description="Entity type: a letter, then letters, digits, _ or -.")]


class EntityTypesSpec(Model):
    """Several kinds of entity in one catalog: the column naming each row's type and the
    types it may hold (ids stay unique across types)."""

    column: str = Field(description="Column holding each entity's type.")
    values: list[TypeName] = Field(min_length=1, description=(
        "The types the column may hold (e.g. [artist, station]); a row of another type, or "
        "of none, is an error when the catalog is read."))


class CatalogSpec(Model):
    """The entities to retrieve: a Parquet, CSV, TSV or JSONL file (text ones may be gzipped)."""

    path: str = Field(description="Catalog file, relative to the spec file.")
    id: str = Field("id", description="Column holding the entity id.")
    title: str | None = Field(None, description="Column shown as the result title in tables.")
    format: Literal["parquet", "csv", "tsv", "jsonl"] | None = Field(
        None, description="File format; inferred from the extension when omitted.")
    lists: dict[str, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict, description=(
            "Text columns holding lists joined by a separator, split when the catalog is "
            "read (column → separator, e.g. `{genres: '|'}`): each value then counts alone "
            "(slots, attributes, indexed text)."))
    types: EntityTypesSpec | None = Field(None, description=(
        "Entity types (e.g. artists and stations): the column and its values. Unset: one "
        "kind of entity, untyped."))


class ComponentSpec(Model):
    """A node that uses a registered component with parameters."""

    use: ComponentName = Field(description="Name of a registered component (see `ltrr plugins`).")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with",
                                  description="The component's parameters.")


class EncoderSpec(ComponentSpec):
    """A text encoder (e.g. a sentence-transformers model) that arms refer to by id."""

    id: NodeId


class SlotterSpec(ComponentSpec):
    """A query-understanding step: finds slots (tags, entities, ...) in the query."""

    id: NodeId
    cache: int = Field(0, ge=0, description=(
        "Entries of an in-memory LRU cache of this slotter's results, keyed by everything it "
        "receives (query text, user, context), so a hit returns exactly what it would "
        "have computed; 0 (default) turns it off. For components that do not learn: the "
        "cache lives until the pipeline is reloaded. Worth it where traffic repeats."))


class ArmSpec(ComponentSpec):
    """A retrieval arm: proposes candidate entities for a query."""

    id: NodeId
    from_: list[NodeId] = Field(default_factory=list, alias="from", description=(
        "Upstream arms or slotters whose candidates (or entity slots) seed this arm."))
    deadline_ms: float = Field(1000.0, gt=0, description=(
        "Time budget per query when serving (`ltrr serve`, or `--deadlines`); a batch call "
        "gets deadline_ms × its queries, counted after warm-up. An arm that exceeds it is "
        "dropped from those responses, with a note in their trace. Offline commands wait "
        "for every arm by default."))
    max_k: int = Field(1000, gt=0, description="Most candidates this arm may be asked for.")
    types: list[TypeName] | None = Field(None, description=(
        "The entity types this arm retrieves (needs `catalog.types`): it sees only catalog "
        "rows of these types, and returns only them. Default: every type."))
    seeds: int = Field(10, gt=0, description=(
        "How many top candidates of each upstream arm seed this arm (with `from:`)."))
    cache: int = Field(0, ge=0, description=(
        "Entries of an in-memory LRU cache of this arm's results, keyed by everything it "
        "receives (query text, user, context, k, slots, seeds), so a hit returns exactly what it would "
        "have computed; 0 (default) turns it off. For components that do not learn: the "
        "cache lives until the pipeline is reloaded. Worth it where traffic repeats."))


class PolicySpec(ComponentSpec):
    """Decides per query how many candidates to draw from each arm."""

    use: ComponentName = "static"
    budget: int = Field(gt=0, description="Total candidate budget shared by the arms.")


class MergeSpec(ComponentSpec):
    """Combines the arms' candidates into one list with provenance."""

    use: ComponentName = "union"


class RankerSpec(ComponentSpec):
    """Orders the merged candidates into the final results."""

    use: ComponentName = "score"


class TypeQuota(Model):
    """How many results of one entity type a response holds."""

    min: int = Field(0, ge=0, description=(
        "At least this many (when the candidates hold as many of the type)."))
    max: int | None = Field(None, ge=0, description="At most this many; unset: no limit.")


class OutputSpec(Model):
    """What a response returns."""

    k: int = Field(10, gt=0, description="Number of results returned per query.")
    quotas: dict[TypeName, TypeQuota] = Field(default_factory=dict, description=(
        "Blending of entity types (needs `catalog.types`): per type, the least and most "
        "results of it among the k, e.g. `{station: {min: 1, max: 3}}`. The ranker's order "
        "is kept within these bounds: a result is skipped only to respect a max or to make "
        "room for a min."))


class LogSpec(Model):
    """The durable decision log (one Parquet part per answered batch)."""

    decisions: bool = Field(True, description="Append a Decision record per query.")
    path: str | None = Field(None, description=(
        "Decision log directory, relative to the spec; default <state_dir>/decisions."))


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(value: Any) -> Any:
    """'30m', '2h', '1d', '45s' → seconds; numbers and anything else pass through."""
    if isinstance(value, str):
        text = value.strip().lower()
        unit = _UNITS.get(text[-1:]) if text else None
        try:
            return float(text[:-1]) * unit if unit else float(text)
        except ValueError:
            raise ValueError(f"not a duration: {value!r} (use seconds, or a number with "
                             f"s, m, h or d, e.g. '30m')") from None
    return value


class FeedbackSpec(Model):
    """How feedback events count: a weight per event type (reward and learning signal)."""

    weights: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=lambda: {"click": 1.0, "play": 1.0, "favorite": 2.0, "purchase": 3.0,
                                 "skip": -0.5, "impression": 0.0, "abandon": 0.0},
        description="Weight of each event type; types not listed are rejected on ingestion.")
    max_future_s: float = Field(86400.0, ge=0, allow_inf_nan=False, description=(
        "How far ahead of the receiving clock an event's timestamp may be, in seconds "
        "(clock skew; default one day). Later, non-finite and pre-1970 timestamps are "
        "refused on ingestion (`ltrr feedback`, `/feedback`) and skipped, counted, by "
        "`ltrr train` and catch-up if already logged."))
    attribution_window: Annotated[float | None, BeforeValidator(_duration)] = Field(
        None, gt=0, allow_inf_nan=False, description=(
            "How long after a decision its events count (seconds, or e.g. '30m', '2h', "
            "'1d'). Set, the policy learns every logged decision: one that got no event "
            "within the window is learned as reward 0 (minus its costs) once the window "
            "closed, and events logged later are not its reward. Unset: the policy learns "
            "only decisions with events. Time is the logs' (when a decision or event was "
            "logged), not the events' own timestamps."))


class PipelineSpec(Model):
    """A whole retrieval-and-ranking pipeline."""

    version: Literal[1] = Field(1, description="Spec format version; 1 is the only one.")
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description=(
        "Pipeline name: names the default state directory and tags TREC runs."))
    description: str = Field("", description="Free text for humans.")
    requires: list[str] = Field(default_factory=list, description=(
        "Python packages (distributions) providing third-party components this spec uses."))
    catalog: CatalogSpec
    state_dir: str | None = Field(None, description=(
        "Where indexes, models and logs live, relative to the spec; default .ltrr/<name>."))
    encoders: list[EncoderSpec] = Field(default_factory=list, description=(
        "Text encoders, shared by the arms that name them."))
    slotters: list[SlotterSpec] = Field(default_factory=list)
    arms: list[ArmSpec] = Field(min_length=1)
    policy: PolicySpec
    merge: MergeSpec = Field(MergeSpec(), description="The merge step (default: union).")
    ranker: RankerSpec = Field(RankerSpec(), description="The ranker (default: score).")
    output: OutputSpec = Field(OutputSpec(), description="Response size.")
    log: LogSpec = Field(LogSpec(), description="Decision logging.")
    feedback: FeedbackSpec = Field(FeedbackSpec(), description="Feedback event weights.")

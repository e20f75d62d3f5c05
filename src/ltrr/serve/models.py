"""Request and response models of the HTTP API (pydantic; unknown fields are errors).

Strings are checked to be valid Unicode (JSON can carry lone surrogates such as
``"\\ud800"``, which nothing downstream can store); lengths and ``k`` that depend on
the server's options and the spec are checked by the endpoints.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ltrr.feedback.schema import Event


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone UTF-16 surrogate (invalid Unicode)") from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]


def _time(value: float | str | None) -> float | str | None:
    """A context timestamp must be a time a date can show (``ltrr.timestamps``)."""
    from ltrr.timestamps import check_timestamp

    if value is not None:
        check_timestamp(value, max_future=None)     # ValueError: a 422 naming the field
    return value


class Context(BaseModel):
    """Free-form request context; the keys ltrr reads are checked."""

    model_config = ConfigDict(extra="allow", strict=True)

    timestamp: Annotated[float | Text | None, AfterValidator(_time)] = Field(None, description=(
        "When the query was asked: epoch seconds or ISO 8601 (time features of a learning "
        "policy); finite, 1970 to 9999. Default: the server's clock."))
RequestId = Annotated[Text, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", description=(
    "Client-chosen id of this request (letters, digits, . _ : -, at most 128); one is "
    "generated when absent. Feedback events name it in their `request_id`."))]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SearchRequest(_Model):
    """One query."""

    query: Text = Field(description=(
        "The query text, as the user typed it: plain text, never parsed as query syntax. "
        "Must not be empty or blank; at most `--max-query-chars` characters (default "
        "1,000)."), examples=["<what the user typed>"])
    user_id: Text | None = Field(None, max_length=256, description=(
        "The user asking (for personalisation and for learning from their feedback)."))
    k: int | None = Field(None, ge=1, description=(
        "Number of results (default and maximum: the spec's `output.k`)."))
    request_id: RequestId | None = None
    context: Annotated[Context, AfterValidator(
        lambda c: c.model_dump(exclude_unset=True))] | None = Field(None, description=(
            "Free-form request context (device, locale...), logged with the decision."))


class Result(BaseModel):
    """One ranked entity."""

    rank: int = Field(description="1-based position.")
    entity_id: str
    title: str | None = Field(description="The catalog's title column, when the spec names one.")
    score: float = Field(description="The ranker's score.")
    arms: dict[str, int] = Field(description="Arms that found the entity → its rank there.")
    type: str | None = Field(None, description=(
        "The entity's type, when the catalog declares types (`catalog.types`)."))


class SearchResponse(BaseModel):
    """The ranked results of one query."""

    request_id: str = Field(description="Echoed or generated; send it back with feedback.")
    results: list[Result]
    timings_ms: dict[str, float] = Field(description=(
        "Per pipeline node (ms per query of the batch it ran in), `total` and `framework` "
        "of the pipeline, `batch_size`, `queue` (waiting for a batch) and `server` (from "
        "the request's arrival in the handler to its answer)."))
    trace: list[str] = Field(description="Notes of the pipeline: dropped or failed arms.")


class FeedbackRequest(_Model):
    """A batch of feedback events."""

    events: list[Event] = Field(description="The events; at most `--max-events` (10,000).")


class FeedbackResponse(BaseModel):
    """What was logged. The events are durable (fsynced) when this is returned."""

    received: int = Field(description="Events in the request.")
    new: int = Field(description="Events logged now (the others' ids were logged before).")


class ErrorResponse(BaseModel):
    """Every error response (4xx and 5xx) has this shape."""

    error: str = Field(description="What is wrong.")
    field: str | None = Field(None, description=(
        "The request field at fault, e.g. `query` or `events[3].type`."))
    hint: str | None = Field(None, description="How to fix it.")


class HealthResponse(BaseModel):
    """Liveness and what is being served."""

    status: str = Field(description=(
        "`ok`; `degraded` when something needs an operator (see `problems`: a damaged "
        "log part quarantined, a damaged cursor rebuilt, learning held by another "
        "process) while the server keeps serving; `stopping` during shutdown."))
    problems: list[str] = Field(default_factory=list, description=(
        "Why the status is `degraded`, each naming the file and how to clear it."))
    spec: str = Field(description="The spec's pipeline name.")
    spec_path: str
    spec_hash: str
    uptime_s: float
    generation: int = Field(description="1 at start, +1 per successful reload.")
    pending_events: int = Field(description="Events logged but not yet learned from.")
    learning: dict[str, Any] = Field(description=(
        "The background learner: runs, last run's time and per-learner stats, last error."))
    worker: dict[str, Any] = Field(default_factory=dict, description=(
        "The process that answered: index (0 = the leader, which learns), workers, role "
        "(single, leader, follower), pid. With `--workers N` each answers for itself."))
    caches: dict[str, Any] = Field(default_factory=dict, description=(
        "Result caches of the slotters and arms with `cache:` in the spec, by node: size, "
        "entries, hits, misses, hit_rate (since the last reload)."))


class ReloadResponse(BaseModel):
    """A successful reload."""

    generation: int
    spec_hash: str
    seconds: float = Field(description="Time to compile and open the new pipeline.")

"""Feedback: the event schema, the durable event log, and joining events to decisions."""

from ltrr.feedback.events import EVENT_SCHEMA, EventLog, read_events
from ltrr.feedback.interactions import interactions

__all__ = ["EVENT_SCHEMA", "EventLog", "read_events", "interactions"]

"""Server options (``ltrr serve`` flags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``ltrr serve`` can be told; the defaults are the CLI's."""

    spec: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32             # most queries per Pipeline.run_batch call
    max_wait_ms: float = 1.0        # most time a batch waits for announced requests
    max_query_chars: int = 1000     # longer queries are refused (422)
    max_search_bytes: int = 64 * 1024       # request body limit of /search
    max_feedback_bytes: int = 8 * 1024 * 1024  # request body limit of /feedback
    max_events: int = 10_000        # most events per /feedback request
    learn_interval_ms: float = 200.0  # the learner waits this long to gather events
    log_level: str = "warning"      # uvicorn's log level
    access_log: bool = False
    workers: int = 1                # processes serving the port (worker 0 learns)

    def __post_init__(self) -> None:
        from ltrr.errors import RunError

        checks = [("--max-batch", self.max_batch, 1),
                  ("--max-query-chars", self.max_query_chars, 1),
                  ("--max-search-bytes", self.max_search_bytes, 256),
                  ("--max-feedback-bytes", self.max_feedback_bytes, 256),
                  ("--max-events", self.max_events, 1),
                  ("--workers", self.workers, 1)]
        for flag, value, low in checks:
            if value < low:
                raise RunError(f"{flag} must be at least {low}, got {value}")
        if self.max_wait_ms < 0 or self.learn_interval_ms < 0:
            raise RunError("--max-wait-ms and --learn-interval-ms must be >= 0")
        if not 0 <= self.port <= 65535:
            raise RunError(f"--port must be 0..65535, got {self.port}")

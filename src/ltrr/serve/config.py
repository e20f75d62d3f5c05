"""Server options (``ltrr serve`` flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
TOKEN_ENV = "LTRR_ADMIN_TOKEN"     # where the admin token can come from


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
    # connections (per worker process; see ltrr.serve.protocol)
    max_connections: int = 1000     # open connections; beyond, idle ones close or 503
    header_timeout_s: float = 10.0  # a request's line and headers must arrive within this
    body_timeout_s: float = 60.0    # ... and its body within this after the headers
    keepalive_timeout_s: float = 15.0   # an idle kept-alive connection is closed after this
    max_header_bytes: int = 32 * 1024   # request line and headers (431 beyond)
    # who may call (see ltrr.serve.guard)
    allowed_hosts: tuple[str, ...] = ()     # Host names; () = the default rule, "*" = any
    allowed_origins: tuple[str, ...] = ()   # cross-origin callers (CORS), e.g. http://app:3000
    admin_token: str | None = field(default=None, repr=False)   # /admin/* needs it when set

    def __post_init__(self) -> None:
        from ltrr.errors import RunError

        # lists from JSON (the supervisor hands the options to its workers that way)
        object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        object.__setattr__(self, "allowed_origins", tuple(o.rstrip("/") for o in
                                                          self.allowed_origins))
        checks = [("--max-batch", self.max_batch, 1),
                  ("--max-query-chars", self.max_query_chars, 1),
                  ("--max-search-bytes", self.max_search_bytes, 256),
                  ("--max-feedback-bytes", self.max_feedback_bytes, 256),
                  ("--max-events", self.max_events, 1),
                  ("--workers", self.workers, 1),
                  ("--max-connections", self.max_connections, 1),
                  ("--max-header-bytes", self.max_header_bytes, 1024)]
        for flag, value, low in checks:
            if value < low:
                raise RunError(f"{flag} must be at least {low}, got {value}")
        if self.max_wait_ms < 0 or self.learn_interval_ms < 0:
            raise RunError("--max-wait-ms and --learn-interval-ms must be >= 0")
        for flag, value in (("--header-timeout", self.header_timeout_s),
                            ("--body-timeout", self.body_timeout_s),
                            ("--keepalive-timeout", self.keepalive_timeout_s)):
            if not 0 < value < float("inf"):
                raise RunError(f"{flag} must be a positive number of seconds, got {value}")
        if not 0 <= self.port <= 65535:
            raise RunError(f"--port must be 0..65535, got {self.port}")
        for origin in self.allowed_origins:
            if "://" not in origin or origin.count("/") != 2:
                raise RunError(f"--allow-origin {origin!r} is not an origin",
                               hint="give scheme://host[:port], e.g. http://localhost:3000")
        if self.admin_token is not None and not self.admin_token.strip():
            raise RunError("the admin token is empty")

    @property
    def loopback(self) -> bool:
        """Bound to a loopback address: only this machine can connect."""
        from ipaddress import ip_address

        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False


def admin_token(path: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The admin token: the first line of ``path`` (``--admin-token-file``), else the
    ``LTRR_ADMIN_TOKEN`` environment variable, else None (a flag would show in ``ps``)."""
    import os

    from ltrr.errors import RunError

    if path is None:
        token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
        return token or None
    try:
        token = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"--admin-token-file {path}: cannot read it ({exc})",
                       hint="give a readable file holding the token on its first line") \
            from None
    if not token or not token[0].strip():
        raise RunError(f"--admin-token-file {path}: the file is empty",
                       hint="write the token on its first line (e.g. the output of "
                       "`python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    return token[0].strip()

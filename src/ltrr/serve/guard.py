"""Who may call the server: Host, Origin, content type and the admin token.

A web page the operator visits can send requests to a server on 127.0.0.1 — directly
(cross-site request forgery) or through a name of its own that it points at 127.0.0.1
(DNS rebinding). The browser marks such requests, and :class:`RequestGuard` refuses
them before anything else runs (the /search fast path included):

* ``Host`` must name this server (400): by default, on a loopback address, the bound
  address or a loopback name (localhost, 127.0.0.1, [::1]); on any other address any
  name (clients reach it by names the server cannot know) — ``--allowed-host``
  restricts it;
* a request with an ``Origin`` (browsers send one with every POST and every
  cross-origin call) must come from the server's own pages — the origin's host:port is
  the ``Host`` — or from an ``--allow-origin`` (which also gets CORS headers); else 403;
* a body must be ``application/json`` (415): the only types a page can send without
  the browser asking first are text/plain and the two form types;
* ``/admin/*`` needs ``Authorization: Bearer <token>`` when a token is set (401); with
  none, it is refused on a non-loopback address (403): reloading compiles and opens the
  whole pipeline, which nobody on the network should be able to make the server do.
"""

from __future__ import annotations

import hmac
from typing import Any

from ltrr.serve.config import LOOPBACK_NAMES, TOKEN_ENV, ServeConfig
from ltrr.serve.errors import ApiError

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "content-type, authorization"


def host_name(value: str) -> str:
    """The name of a ``Host`` header value, without port, lower case: ``[::1]:80`` → ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        name = value[1:value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:
        name = value.partition(":")[0]
    else:
        name = value
    return name.rstrip(".")


class RequestGuard:
    """The checks of the module docstring, for one server's options."""

    def __init__(self, config: ServeConfig):
        self.token = config.admin_token.strip().encode() if config.admin_token else None
        self.loopback = config.loopback
        self.origins = frozenset(o.lower() for o in config.allowed_origins)
        hosts = {h.lower().rstrip(".") for h in config.allowed_hosts}
        if not hosts and self.loopback:
            hosts = {*LOOPBACK_NAMES, host_name(config.host)}
        self.any_host = not hosts or "*" in hosts
        self.hosts = frozenset(h for h in hosts if not h.startswith("*."))
        self.suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))

    def check(self, scope: dict[str, Any]) -> ApiError | None:
        """The refusal of an HTTP request, or None when it may go on. A CORS preflight
        that may go on is answered by :meth:`preflight`."""
        host = origin = ctype = auth = None
        body = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"content-type":
                ctype = value.decode("latin-1")
            elif name == b"content-length":
                body = body or value.strip() not in (b"0", b"")
            elif name == b"transfer-encoding":
                body = True
            elif name == b"authorization":
                auth = value
        if host is not None and not self._host_ok(host):
            return ApiError(400, f"Host {host!r} is not a name of this server", hint=(
                "call the server by its address (a page on another site that points its "
                "own name at this address is refused); allowed: "
                f"{', '.join(sorted(self.hosts | set(self.suffixes)))}; add names with "
                "--allowed-host"))
        if origin is not None and not self._origin_ok(origin, host):
            return ApiError(403, f"cross-origin request from {origin} refused", hint=(
                "a web page on another site may not call this server; to allow a front "
                f"end, start the server with --allow-origin {origin}"))
        method = scope["method"]
        if scope["path"].startswith("/admin/"):
            refused = self._admin(auth)
            if refused is not None:
                return refused
        if method in BODY_METHODS:
            if ctype is not None:
                media = ctype.partition(";")[0].strip().lower()
                if media != "application/json":
                    return ApiError(415, f"content type {media or ctype!r} is not accepted; "
                                    "the body must be JSON",
                                    hint="send the header Content-Type: application/json")
            elif body:
                return ApiError(415, "a request body without a content type is not "
                                "accepted; the body must be JSON",
                                hint="send the header Content-Type: application/json")
        return None

    def cors(self, scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        """CORS headers for a response to an ``--allow-origin``; [] for anyone else."""
        if not self.origins:
            return []
        for name, value in scope["headers"]:
            if name == b"origin":
                if value.decode("latin-1").lower() in self.origins:
                    return [(b"access-control-allow-origin", value), (b"vary", b"Origin")]
                return []
        return []

    def preflight(self, scope: dict[str, Any]) -> list[tuple[bytes, bytes]] | None:
        """The headers of a 204 answering an allowed CORS preflight; None if ``scope``
        is no preflight (a refused one never gets here: its origin failed :meth:`check`)."""
        if scope["method"] != "OPTIONS":
            return None
        asked = any(name == b"access-control-request-method" for name, _ in scope["headers"])
        cors = self.cors(scope)
        if not asked or not cors:
            return None
        return cors + [(b"access-control-allow-methods", CORS_METHODS.encode()),
                       (b"access-control-allow-headers", CORS_HEADERS.encode()),
                       (b"access-control-max-age", b"600")]

    def _host_ok(self, host: str) -> bool:
        if self.any_host:
            return True
        name = host_name(host)
        return name in self.hosts or any(name.endswith(s) for s in self.suffixes)

    def _origin_ok(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if origin in self.origins:
            return True
        scheme, sep, netloc = origin.partition("://")
        if not sep or origin == "null":
            return False
        # the server's own pages (/docs): the origin's host:port is the Host it called
        return host is not None and netloc == host.strip().lower()

    def _admin(self, auth: bytes | None) -> ApiError | None:
        if self.token is None:
            if self.loopback:
                return None
            return ApiError(403, "admin endpoints are off: the server listens on a "
                            "non-loopback address and no admin token is set", hint=(
                                f"set {TOKEN_ENV} or --admin-token-file to enable them (then "
                                "send Authorization: Bearer <token>), or reload with "
                                "`kill -HUP <pid>` on the server's machine"))
        scheme, _, given = (auth or b"").partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
            return None
        return ApiError(401, "admin endpoints need the admin token" if auth is None else
                        "the admin token is wrong", hint=(
                            "send the header Authorization: Bearer <token> with the token "
                            f"the server was started with ({TOKEN_ENV} or "
                            "--admin-token-file)"),
                        headers={"WWW-Authenticate": "Bearer"})

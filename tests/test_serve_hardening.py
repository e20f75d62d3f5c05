"""`ltrr serve` against hostile clients: idle and slow connections, a connection flood,
oversized headers, cross-origin and DNS-rebinding writes, unauthenticated admin calls,
and a /docs page that must load nothing from another host.

Real ``ltrr serve`` subprocesses on loopback. Timeouts are set short (1 s) and every
wait polls its condition with a generous limit: no test asserts how fast anything is.
"""

from __future__ import annotations

import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

LTRR = str(Path(sys.executable).with_name("ltrr"))
SHORT = ("--header-timeout", "1", "--body-timeout", "1", "--keepalive-timeout", "1")
PATIENCE_S = 60.0            # the most any poll below waits (a loaded machine is slow)
JSON = {"content-type": "application/json"}


def _addr(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def _connect(url: str) -> socket.socket:
    sock = socket.create_connection(_addr(url), timeout=30)
    sock.setblocking(False)
    return sock


class Conn:
    """A raw client socket; ``poll()`` reads what arrived and notices the close."""

    def __init__(self, url: str):
        self.sock = _connect(url)
        self.received = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        if not self.closed:
            try:
                self.sock.send(data)
            except OSError:                  # reset or closed by the server
                self.closed = True

    def poll(self) -> bool:
        """True once the server closed the connection."""
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
            self.received += chunk
        return self.closed

    def close(self) -> None:
        self.sock.close()


def _until(condition, what: str, tick=None) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for: {what}"
        if tick is not None:
            tick()
        time.sleep(0.05)


def _status(data: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    return int(m.group(1)) if m else None


def _body(data: bytes) -> bytes:
    return data.partition(b"\r\n\r\n")[2]


def _metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _ok(url: str) -> None:
    """/health, /search and /feedback answer on fresh connections."""
    with httpx.Client(timeout=30) as http:
        r = http.get(url + "/health")
        assert r.status_code == 200, r.text
        r = http.post(url + "/search", json={"query": "britney spears"})
        assert r.status_code == 200, r.text
        assert r.json()["results"]
        r = http.post(url + "/feedback", json={"events": []})
        assert r.status_code == 200, r.text


# --- item 8: idle, slow and too many connections --------------------------------------------

def test_idle_and_slowloris_connections_are_closed_while_the_server_answers(
        serve_spec, start_server):
    server = start_server(serve_spec, *SHORT, "--max-connections", "50")
    url = server.url
    host = f"127.0.0.1:{_addr(url)[1]}".encode()
    idle = [Conn(url) for _ in range(200)]            # four times the cap, never a byte
    slow = [Conn(url) for _ in range(10)]             # slowloris: a header byte at a time
    pending = [b"GET /health HTTP/1.1\r\nHost: " + host + b"\r\n" + b"X-Slow: y" * 1000]
    for c in slow:
        c.send(pending[0][:1])
    sent = {"n": 1}

    def trickle() -> None:
        i = sent["n"]
        if i < len(pending[0]):
            for c in slow:
                c.send(pending[0][i:i + 1])
            sent["n"] += 1

    # the server answers while they are open (the newest idle ones and the slow ones)
    _ok(url)
    trickle()
    _ok(url)
    # ... and closes every one of them: slow ones with a 408, idle ones quietly
    _until(lambda: all(c.poll() for c in slow), "the slowloris connections to close", trickle)
    _until(lambda: all(c.poll() for c in idle), "the idle connections to close")
    for c in slow:
        assert _status(c.received) == 408, c.received[:300]
        assert b"--header-timeout" in _body(c.received)
    assert all(c.received == b"" for c in idle)
    _ok(url)
    # beyond the cap the oldest idle connections made room for new ones
    assert _metric(url, 'ltrr_connections_closed_total{reason="evicted"}') >= 100
    assert _metric(url, 'ltrr_connections_closed_total{reason="header_timeout"}') >= 10
    for c in idle + slow:
        c.close()
    assert server.stop() == 0


def test_keepalive_connections_are_closed_after_the_idle_timeout(serve_spec, start_server):
    server = start_server(serve_spec, *SHORT)
    url = server.url
    host = f"127.0.0.1:{_addr(url)[1]}".encode()
    conns = [Conn(url) for _ in range(20)]
    for c in conns:
        c.send(b"GET /health HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    # each gets its answer, then the connection is closed once idle for 1 s
    _until(lambda: all(c.poll() for c in conns), "the kept-alive connections to close")
    for c in conns:
        assert _status(c.received) == 200 and b'"status"' in c.received
        c.close()
    assert server.stop() == 0


def test_a_slow_body_is_answered_408_and_closed(serve_spec, start_server):
    server = start_server(serve_spec, *SHORT)
    url = server.url
    host = f"127.0.0.1:{_addr(url)[1]}".encode()
    slow = [Conn(url) for _ in range(5)]
    for c in slow:
        c.send(b"POST /feedback HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: "
               b"application/json\r\nContent-Length: 100000\r\n\r\n{\"events\": [")
    _until(lambda: all(c.poll() for c in slow), "the slow bodies to be refused",
           lambda: [c.send(b" ") for c in slow])
    for c in slow:
        assert _status(c.received) == 408, c.received[:300]
        assert b"--body-timeout" in _body(c.received)
        c.close()
    _ok(url)
    assert server.stop() == 0


def test_a_client_that_stops_reading_is_dropped(serve_spec, start_server):
    server = start_server(serve_spec, *SHORT)
    url = server.url
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(_addr(url))
    request = f"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1:{_addr(url)[1]}\r\n\r\n"
    sock.sendall(request.encode() * 300)          # ~3 MB of answers, none of them read
    _until(lambda: _metric(url, 'ltrr_connections_closed_total{reason="send_timeout"}') >= 1,
           "the connection that does not read to be dropped")
    _ok(url)
    c = Conn.__new__(Conn)
    c.sock, c.received, c.closed = sock, b"", False
    sock.setblocking(False)
    _until(c.poll, "the dropped connection to end")     # what was queued, then the end
    assert 0 < c.received.count(b"HTTP/1.1 200 OK") < 300    # not every answer was sent
    sock.close()
    assert server.stop() == 0


def test_oversized_headers_are_431(serve_spec, start_server):
    server = start_server(serve_spec, "--max-header-bytes", "8192")
    url = server.url
    c = Conn(url)
    c.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    for _ in range(100):                              # 100 KiB of one header, fast
        c.send(b"a" * 1024)
    _until(c.poll, "the oversized header to be refused")
    assert _status(c.received) == 431, c.received[:300]
    assert b"--max-header-bytes" in _body(c.received)
    c.close()
    _ok(url)
    assert server.stop() == 0


def test_the_431_reaches_a_client_still_sending_its_header(serve_spec, start_server):
    """Before: the server closed at once with the client's bytes unread, the kernel reset
    the connection, and the reset discarded the 431 before the client read it (CI, loaded:
    the client received nothing). Now the server ends its side and drops what follows."""
    server = start_server(serve_spec, "--max-header-bytes", "8192")
    url = server.url
    c = Conn(url)
    c.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 16384)
    _until(lambda: _metric(url, 'ltrr_connections_closed_total{reason="header_too_large"}')
           >= 1, "the oversized header to be answered")
    for _ in range(64):                          # the client goes on sending, reads later
        c.send(b"a" * 1024)
    time.sleep(0.5)                              # room for a reset to arrive (none must)
    _until(c.poll, "the connection to end")
    assert _status(c.received) == 431, c.received[:300]
    c.close()
    _ok(url)
    assert server.stop() == 0


def test_a_full_server_refuses_with_503_until_connections_free_up(serve_spec, start_server):
    # bodies never time out here: the test decides when they end
    server = start_server(serve_spec, "--max-connections", "20", "--body-timeout", "3600")
    url = server.url
    host = f"127.0.0.1:{_addr(url)[1]}".encode()

    def busy() -> Conn:                               # a request whose body is still coming
        c = Conn(url)
        c.send(b"POST /feedback HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: "
               b"application/json\r\nContent-Length: 1000\r\n\r\n{")
        return c

    held = [busy() for _ in range(20)]
    answer: dict[str, httpx.Response] = {}

    def refused() -> bool:
        # a connection closed before the server saw its request (made room) is replaced
        for i, c in enumerate(held):
            if c.poll():
                c.close()
                held[i] = busy()
        with httpx.Client(timeout=30) as http:
            answer["r"] = http.get(url + "/health")
        return answer["r"].status_code == 503

    _until(refused, "a 503 while 20 requests hold every connection")
    r = answer["r"]
    err = r.json()
    assert "connections" in err["error"] and "--max-connections" in err["hint"]
    assert r.headers["retry-after"] and r.headers["connection"] == "close"
    for c in held:
        c.close()

    def answered() -> bool:
        with httpx.Client(timeout=30) as http:
            return http.get(url + "/health").status_code == 200

    _until(answered, "/health once the held connections are gone")
    _ok(url)
    assert _metric(url, 'ltrr_connections_closed_total{reason="refused"}') >= 1
    assert server.stop() == 0


def test_the_open_files_limit_is_raised_to_the_hard_limit(serve_spec):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    low = 256

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    proc = subprocess.Popen([LTRR, "serve", str(serve_spec), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lower)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "listening on" in line:
                break
        assert "listening on" in "".join(lines), "".join(lines)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        row = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        now_soft = row.split()[3]
        assert now_soft != str(low), row
        assert now_soft == (str(hard) if hard != resource.RLIM_INFINITY else "unlimited") \
            or int(now_soft) >= 65536, row
    finally:
        proc.terminate()
        proc.wait(60)


# --- item 12: cross-origin writes ----------------------------------------------------------

def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "field", "hint"} and body["error"], body
    return body


def test_post_bodies_must_be_json(module_server):
    url = module_server.url
    before = httpx.get(url + "/health", timeout=30).json()["generation"]
    event = b'{"events": [{"entity_id": "289", "type": "click", "query": "csrf"}]}'
    for path, body in (("/search", b'{"query": "britney spears"}'), ("/feedback", event),
                       ("/admin/reload", b"{}")):
        for ctype in ("text/plain", "application/x-www-form-urlencoded",
                      "multipart/form-data; boundary=x", None):
            headers = {"content-type": ctype} if ctype else {}
            err = _error(httpx.post(url + path, content=body, headers=headers, timeout=30),
                         415)
            assert "application/json" in err["hint"], err
    # nothing was learned or reloaded
    health = httpx.get(url + "/health", timeout=30).json()
    assert health["generation"] == before
    # JSON with parameters is JSON
    r = httpx.post(url + "/search", content=b'{"query": "britney spears"}',
                   headers={"content-type": "Application/JSON; charset=utf-8"}, timeout=30)
    assert r.status_code == 200, r.text
    # a POST without a body needs no content type (e.g. `curl -X POST .../admin/reload`)
    r = httpx.post(url + "/feedback", timeout=30)
    assert r.status_code in (400, 422), r.text


def test_foreign_host_headers_are_refused(module_server):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1."""
    url = module_server.url
    port = _addr(url)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example",
                 "localhost.evil.example:8000"):
        h = {"host": host, **JSON}
        err = _error(httpx.post(url + "/search", json={"query": "rock"}, headers=h,
                                timeout=30), 400)
        assert host.split(":")[0] in err["error"] and "--allowed-host" in err["hint"]
        _error(httpx.post(url + "/feedback", json={"events": []}, headers=h, timeout=30), 400)
        _error(httpx.post(url + "/admin/reload", headers=h, timeout=30), 400)
        _error(httpx.get(url + "/health", headers=h, timeout=30), 400)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", "127.0.0.1",
                 f"[::1]:{port}", f"LOCALHOST:{port}"):
        r = httpx.post(url + "/search", json={"query": "rock"}, headers={"host": host},
                       timeout=30)
        assert r.status_code == 200, (host, r.text)


def test_cross_origin_requests_are_403(module_server):
    url = module_server.url
    port = _addr(url)[1]
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null",
                   f"http://127.0.0.1:{port + 1}", f"http://localhost:{port}.evil.example"):
        h = {"origin": origin}
        err = _error(httpx.post(url + "/search", json={"query": "rock"}, headers=h,
                                timeout=30), 403)
        assert origin in err["error"] and "--allow-origin" in err["hint"]
        _error(httpx.post(url + "/feedback", json={"events": []}, headers=h, timeout=30), 403)
        _error(httpx.post(url + "/admin/reload", headers=h, timeout=30), 403)
        # a no-cors "simple" request (text/plain) is refused as well
        r = httpx.post(url + "/feedback", content=b'{"events": []}',
                       headers={**h, "content-type": "text/plain"}, timeout=30)
        assert r.status_code in (403, 415)
    # the server's own pages (/docs) post with their own origin
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        r = httpx.post(url + "/search", json={"query": "rock"},
                       headers={"origin": origin, "host": urlsplit(origin).netloc},
                       timeout=30)
        assert r.status_code == 200, (origin, r.text)


def test_an_allowed_origin_gets_cors_headers(serve_spec, start_server):
    server = start_server(serve_spec, "--allow-origin", "http://app.example:3000")
    url = server.url
    app = {"origin": "http://app.example:3000"}
    pre = httpx.options(url + "/search", headers={
        **app, "access-control-request-method": "POST",
        "access-control-request-headers": "content-type"}, timeout=30)
    assert pre.status_code == 204, pre.text
    assert pre.headers["access-control-allow-origin"] == "http://app.example:3000"
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "content-type" in pre.headers["access-control-allow-headers"].lower()
    r = httpx.post(url + "/search", json={"query": "rock"}, headers=app, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "http://app.example:3000"
    assert "origin" in r.headers["vary"].lower()
    _error(httpx.post(url + "/search", json={"query": "rock"},
                      headers={"origin": "http://other.example"}, timeout=30), 403)
    _error(httpx.options(url + "/search", headers={
        "origin": "http://other.example", "access-control-request-method": "POST"},
        timeout=30), 403)
    assert server.stop() == 0


def test_admin_endpoints_need_the_token_when_one_is_set(serve_spec, start_server, tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(0o600)
    server = start_server(serve_spec, "--admin-token-file", str(token_file))
    url = server.url
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-token"},
                    {"authorization": "Basic czNjcmV0LXRva2Vu"}):
        err = _error(httpx.post(url + "/admin/reload", headers=headers, timeout=60), 401)
        assert "token" in err["error"] and "Authorization: Bearer" in err["hint"]
    assert httpx.get(url + "/health", timeout=30).json()["generation"] == 1
    r = httpx.post(url + "/admin/reload", headers={"authorization": "Bearer s3cret-token"},
                   timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["generation"] == 2
    # searches and feedback need no token
    _ok(url)
    assert "s3cret" not in httpx.get(url + "/health", timeout=30).text
    assert server.stop() == 0


def test_an_unreadable_or_empty_token_file_is_an_error(serve_spec, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path, text in ((tmp_path / "missing", "cannot read"), (empty, "empty")):
        done = subprocess.run([LTRR, "serve", str(serve_spec), "--port", "0",
                               "--admin-token-file", str(path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        assert "error:" in done.stderr and text in done.stderr and str(path) in done.stderr


# --- the guard's rules for other bindings (no server: nothing leaves loopback) -------------

def _guard(**kw):
    from ltrr.serve.config import ServeConfig
    from ltrr.serve.guard import RequestGuard

    return RequestGuard(ServeConfig(spec=Path("s.yaml"), **kw))


def _scope(method: str, path: str, **headers: str) -> dict:
    return {"type": "http", "method": method, "path": path,
            "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


def test_admin_is_refused_on_a_public_address_without_a_token():
    guard = _guard(host="0.0.0.0", port=8000)
    err = guard.check(_scope("POST", "/admin/reload", host="10.1.2.3:8000"))
    assert err is not None and err.status == 403
    assert "token" in err.error and "LTRR_ADMIN_TOKEN" in err.hint and "kill -HUP" in err.hint
    # search and health are not admin: any host name reaches a public address by default
    assert guard.check(_scope("POST", "/search", host="search.internal:8000",
                              content_type="application/json", content_length="2")) is None
    assert guard.check(_scope("GET", "/health", host="10.1.2.3")) is None
    # with a token, admin needs it
    guard = _guard(host="0.0.0.0", port=8000, admin_token="t0ken")
    assert guard.check(_scope("POST", "/admin/reload", host="x")).status == 401
    assert guard.check(_scope("POST", "/admin/reload", host="x",
                              authorization="Bearer t0ken")) is None


def test_allowed_hosts_can_be_set_for_a_public_address():
    guard = _guard(host="0.0.0.0", allowed_hosts=("search.example.com",))
    assert guard.check(_scope("GET", "/health", host="search.example.com:8000")) is None
    err = guard.check(_scope("GET", "/health", host="evil.example"))
    assert err.status == 400 and "search.example.com" in err.hint
    # loopback: the bound address and the loopback names; '*' allows any
    guard = _guard(host="127.0.0.1")
    assert guard.check(_scope("GET", "/health", host="localhost")) is None
    assert guard.check(_scope("GET", "/health", host="evil.example")).status == 400
    assert _guard(host="127.0.0.1", allowed_hosts=("*",)).check(
        _scope("GET", "/health", host="evil.example")) is None


# --- item 19: /docs works offline ----------------------------------------------------------

def test_docs_without_the_swagger_package_is_a_local_page(monkeypatch):
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from ltrr.serve.docs import add_docs

    monkeypatch.setitem(sys.modules, "swagger_ui_bundle", None)      # not installed
    app = FastAPI(title="t", docs_url=None, redoc_url=None)
    add_docs(app)
    with TestClient(app) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert "swagger-ui-bundle-v2" in page.text and "/openapi.json" in page.text
        assert not re.search(r"https?://", page.text)
        assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 404


def test_docs_page_loads_nothing_from_another_host(module_server):
    url = module_server.url
    page = httpx.get(url + "/docs", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    refs += re.findall(r"""\b(?:url|oauth2RedirectUrl)\s*["']?\s*:\s*["']([^"']+)["']""", html)
    assert refs, html
    origin = urlsplit(url)
    for ref in refs:
        full = urlsplit(urljoin(url + "/docs", ref))
        assert (full.scheme, full.netloc) == (origin.scheme, origin.netloc), ref
        r = httpx.get(urljoin(url + "/docs", ref), timeout=30)
        assert r.status_code == 200, (ref, r.status_code)
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)", html), html
    assert "validatorUrl" in html            # no badge from the online validator
    assert httpx.get(url + "/redoc", timeout=30).status_code == 404
    assert httpx.get(url + "/openapi.json", timeout=30).status_code == 200

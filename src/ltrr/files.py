"""Files a user names — a spec, a catalog, a relation, queries, qrels — checked before
anything reads them, and names from them shown safely in messages.

Only regular files are read: a folder is an error, not a traceback; a named pipe
would block ``open()`` (ignoring Ctrl-C) and a device such as ``/dev/zero`` would
never end. A regular file of 0 bytes is refused too: kernel pseudo-files
(``/proc/self/environ``) report 0 bytes yet have content, and no data file is
usefully empty.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from ltrr.errors import LtrrError, Location, StateError

_PATH = object()     # where=_PATH: the path itself is the error's location

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def _size(n: int) -> str:
    return f"{n / 1e6:.1f}".removesuffix(".0") + " MB" if n >= 1e6 else f"{n:,} bytes"


def check_file(path: Path, what: str, *, error: type[LtrrError] = StateError,
               where: Location | str | None | object = _PATH, node: str | None = None,
               field: str | None = None, hint: str | None = None,
               max_bytes: int | None = None, empty_ok: bool = False) -> os.stat_result:
    """Refuse ``path`` unless it is a non-empty regular file (of at most ``max_bytes``).

    ``empty_ok`` admits 0 bytes: the caller then reads nothing (a /proc file reports 0).

    ``what`` names it in the message ("catalog file"); the error is ``error`` located
    at ``where`` (by default the path itself, else the message names the path), ``node``
    and ``field``. Nothing is opened here.
    """
    if where is _PATH:
        where, named = str(path), f"the {what}"
    else:
        named = f"{what} {path}"

    def fail(message: str, fix: str | None) -> LtrrError:
        return error(message, where=where, node=node, field=field, hint=fix or hint)

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise fail(f"{what} not found" + (f": {path}" if named != f"the {what}" else ""),
                   hint) from None
    except OSError as exc:
        raise fail(f"cannot read {named}: {exc.strerror}", hint) from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a file")
        raise fail(f"{named} is {kind}, not a regular file",
                   hint or "name a regular file; pipes and devices are never read")
    if st.st_size == 0 and not empty_ok:
        raise fail(f"{named} is empty: it reports 0 bytes (as files under /proc and /sys "
                   "do, which are never read)", hint or "name a file with data")
    if max_bytes is not None and st.st_size > max_bytes:
        raise fail(f"{named} is {_size(st.st_size)}; at most {_size(max_bytes)} is "
                   "allowed", hint)
    return st


def read_bytes(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``path`` (one more than allowed shows it is too big,
    even if the file grew after :func:`check_file`)."""
    with open(path, "rb") as f:
        return f.read(limit + 1)


def shown(name: object, width: int = 40) -> str:
    """A name read from a user's file (a column), fit for a message: printable, short."""
    text = "".join(c if c.isprintable() else "?" for c in str(name))
    return text if len(text) <= width else text[:width - 1] + "…"


def shown_names(names: Iterable[object], limit: int = 20) -> str:
    """Comma-separated :func:`shown` names, at most ``limit`` of them, for a hint."""
    names = list(names)
    out = ", ".join(shown(n) for n in names[:limit])
    return out + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def first_line(exc: BaseException, width: int = 160) -> str:
    """An exception's first line, printable and short: a reader's message (polars) may
    quote the file's content, which a message must not echo at length."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return shown(text, width)


_DIGESTS: dict[tuple, str] = {}
_DIGESTS_LOCK = threading.Lock()


def content_digest(path: Path) -> str:
    """A hash of the file's bytes (16 hex digits), the identity of what an index was
    built from: the same content anywhere has the same digest. Hashed once per process
    for a given (file, size, modification time); ``path`` must be a regular file."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key)
    if known is not None:
        return known
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()[:16]
    with _DIGESTS_LOCK:
        _DIGESTS[key] = digest
    return digest


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no second copy on disk), or copy it where links are
    impossible (another file system)."""
    import os
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)

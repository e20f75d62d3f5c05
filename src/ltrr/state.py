"""Atomic writes for pipeline state (temp file/dir + fsync + rename), and the locks
that keep its writers apart across processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) across processes: the
    writers of one log (server workers, ``ltrr feedback``) take turns. Released on exit,
    and by the OS if the process dies."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)          # closing the descriptor releases the lock


class OwnerLock:
    """An exclusive lock on ``path`` held until :meth:`release` (or the process's end),
    for one writer of some state at a time across processes (``fcntl.flock``). The file
    names its holder (pid, command, role), so another process that is refused can say
    who holds it. Re-entrant within a process: several owners of one path share it.
    """

    _held: dict[str, list[int]] = {}        # path → [descriptor, owners], this process
    _guard = threading.Lock()

    def __init__(self, path: Path):
        self.path = Path(path)
        self.held = False

    @property
    def _key(self) -> str:
        return str(self.path.resolve())

    def try_acquire(self, role: str, command: str | None = None) -> bool:
        """Take the lock if free (or already held by this process); never waits.
        ``command`` describes the holder (default: this process's command line)."""
        import fcntl

        if self.held:
            return True
        with self._guard:
            held = self._held.get(self._key)
            if held is not None:
                held[1] += 1
                self.held = True
                return True
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            info = json.dumps({"pid": os.getpid(), "role": role, "command": command or command_line(),
                               "since": round(time.time(), 3)}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, info, 0)
            self._held[self._key] = [fd, 1]
            self.held = True
            return True

    def release(self) -> None:
        if not self.held:
            return
        with self._guard:
            held = self._held[self._key]
            held[1] -= 1
            if held[1] == 0:
                del self._held[self._key]
                with contextlib.suppress(OSError):
                    os.ftruncate(held[0], 0)    # names no holder once released
                os.close(held[0])       # closing the descriptor releases the lock
        self.held = False

    def holder(self) -> dict[str, Any]:
        """Who holds the lock as its file says (``{}`` when unknown: just taken)."""
        try:
            obj = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return obj if isinstance(obj, dict) else {}


def command_line() -> str:
    """This process's command line, the program by its name (``ltrr serve s.yaml``)."""
    argv = [os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python",
            *sys.argv[1:]]
    return " ".join(argv)[:300]


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Replace ``path`` with what ``write(file)`` writes (streamed to a temp file in the
    same folder, fsynced, renamed): readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never half."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (on this machine); this process counts."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # someone else's process
        return True
    return True


# After ".<name>.": "<pid>-<mkdtemp's 8 chars>.building", the same without a pid
# (before owners were recorded), or "old-<pid>".
_LEFTOVER = re.compile(r"(?:(?P<pid>\d+)-)?[a-z0-9_]{8}\.building|old-(?P<old>\d+)")


def remove_leftovers(final: Path) -> list[str]:
    """Remove what killed writers of ``final`` left beside it; return the names removed.

    :func:`atomic_dir` names its temp folder ``.<name>.<pid>-<random>.building`` and the
    folder it replaces ``.<name>.old-<pid>``: one whose pid is dead is a leftover (a
    live pid's is being written, and kept). A temp folder without a pid comes from
    ltrr before owners were recorded; it is a leftover too. If ``final`` itself is
    missing (killed between the two renames), the replaced folder is put back.
    """
    prefix = f".{final.name}."
    removed = []
    try:
        names = sorted(os.listdir(final.parent))
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        found = _LEFTOVER.fullmatch(name[len(prefix):])
        if found is None:
            continue
        pid = found["pid"] or found["old"]
        if pid is not None and pid_alive(int(pid)):
            continue
        path = final.parent / name
        if found["old"] and not final.exists():
            with contextlib.suppress(OSError):      # another process put it back first
                os.replace(path, final)
        else:
            shutil.rmtree(path, ignore_errors=True)
        removed.append(name)
    return removed


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temp folder; on success it replaces ``final`` in one rename.

    On error the temp folder is removed and ``final`` is left as it was. Folders left
    by writers that were killed are removed first (:func:`remove_leftovers`).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}-", suffix=".building",
                                dir=final.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

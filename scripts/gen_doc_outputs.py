"""Regenerate (or check) the command outputs shown in the docs, so none can drift.

A console block preceded by a marker is generated::

    <!-- output: fast -->            (or: <!-- output: slow -->)
    ```console
    $ ltrr validate pipelines/music.yaml
    ok: ...                          <- replaced by what the command prints
    ```

Two more markers prepare what the commands need: ``<!-- setup -->`` before a ``sh``
block runs it (output not shown), ``<!-- file: NAME -->`` before any block writes its
text to NAME. Each ``$`` line (``\\`` continues it on the next line) runs in bash, in a sandbox: a copy
of the repository's ``pipelines/``, ``examples/`` and ``docs/`` without their state
folders (``.ltrr``), beside a link to ``../shared``, with ``.venv/bin`` first on PATH
and ``COLUMNS=100``. The blocks of one page run in order in the same sandbox, so a page
reads as a session: what one block indexes, the next can run. Output is stdout and
stderr as a terminal shows them; the sandbox's path reads ``.``. The working directory carries over from one command to
the next (``cd books`` holds until the next ``##`` heading, where it is the root again).

``fast`` blocks need nothing built (validate, plugins, graph, init, errors): the tests
check them (``--check --fast``). ``slow`` blocks (index, run, evaluate, simulate) are
regenerated with ``make docs``; a check of them compares the output with its volatile
parts masked (timings, durations, generated ids).

    .venv/bin/python scripts/gen_doc_outputs.py [--check] [--fast] [docs/page.md ...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- (output: fast|output: slow|setup|file: [^ ]+) -->\n"
                    r"```[a-z]*\n(.*?)^```\n", re.S | re.M)
#: What changes from run to run: masked before comparing.
VOLATILE = [
    (re.compile(r"\d+(?:\.\d+)? ?ms\b"), "<ms>"),
    (re.compile(r"\b\d+:\d\d:\d\d\b"), "<clock>"),
    (re.compile(r"(seconds|_s|ms_per_[a-z]+|per_second)=\d+(?:\.\d+)?"), r"\1=<s>"),
    (re.compile(r"\b\d+(?:\.\d+)? ?s\b"), "<s>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<id>"),
    (re.compile(r"\d+(?:\.\d+)? (?:docs|queries|sessions)/s"), "<rate>"),
    (re.compile(r"[ \t]+$", re.M), ""),
]


def mask(text: str) -> str:
    for pattern, repl in VOLATILE:
        text = pattern.sub(repl, text)
    return text


def sandbox() -> Path:
    """A scratch copy of what the docs' commands read, state folders left out."""
    top = Path(tempfile.mkdtemp(prefix="ltrr-docs-"))
    root = top / "repo"
    root.mkdir()
    ignore = shutil.ignore_patterns(".ltrr", "__pycache__", "*.egg-info")
    for name in ("pipelines", "examples", "docs"):
        shutil.copytree(ROOT / name, root / name, ignore=ignore, symlinks=True)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (top / "shared").symlink_to(shared, target_is_directory=True)
    return root


def commands(block: str) -> list[str]:
    """The ``$`` commands of a block, continuation lines joined."""
    out, current = [], None
    for line in block.splitlines():
        if current is not None:
            current += "\n" + line
            if not line.endswith("\\"):
                out.append(current)
                current = None
        elif line.startswith("$ "):
            if line.endswith("\\"):
                current = line[2:]
            else:
                out.append(line[2:])
    if current is not None:
        out.append(current)
    return out


class Session:
    """A page's sandbox and its working directory, which carries over between commands."""

    def __init__(self):
        self.root = sandbox()
        self.cwd = self.root
        self._pwd = self.root.parent / "pwd"

    def run(self, command: str) -> str:
        env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb",
               "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        script = f"{command}\nstatus=$?\npwd > '{self._pwd}'\nexit $status\n"
        done = subprocess.run(["bash", "-c", script], cwd=self.cwd, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800)
        if self._pwd.exists():
            self.cwd = Path(self._pwd.read_text().strip())
        text = done.stdout
        for base in (str(self.root.parent / "shared"), str(self.root)):
            text = text.replace(base + "/", "").replace(base, ".")
        return "\n".join(line.rstrip() for line in text.rstrip("\n").splitlines())

    def render(self, block: str) -> str:
        lines = []
        for command in commands(block):
            lines.append("$ " + command)
            output = self.run(command)
            if output:
                lines.append(output)
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        shutil.rmtree(self.root.parent, ignore_errors=True)


def page(path: Path, *, check: bool, fast_only: bool) -> list[str]:
    """Regenerate the marked blocks of ``path`` (or, with ``check``, compare them); the
    problems found, as messages."""
    text = path.read_text(encoding="utf-8")
    if not MARKER.search(text):
        return []
    session = Session()
    problems, pieces, last = [], [], 0
    try:
        for m in MARKER.finditer(text):
            kind, block = m.group(1), m.group(2)
            if re.search(r"^## ", text[last:m.start()], re.M):
                session.cwd = session.root          # a new section starts at the root
            pieces.append(text[last:m.start(2)])
            last = m.end(2)
            pieces.append(block)
            if kind == "setup":
                session.run(block)
                continue
            if kind.startswith("file: "):
                (session.cwd / kind[6:]).write_text(block, encoding="utf-8")
                continue
            if fast_only and kind != "output: fast":
                continue
            fresh = session.render(block)
            if check and mask(fresh) != mask(block):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{_shown(path)}:{line}: the shown output is not "
                                "what the commands print now:\n" + _diff(block, fresh))
            elif not check:
                pieces[-1] = fresh
        pieces.append(text[last:])
    finally:
        session.close()
    if not check:
        new = "".join(pieces)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"wrote {_shown(path)}", file=sys.stderr)
    return problems


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _diff(old: str, new: str) -> str:
    import difflib

    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                        "shown", "printed now", n=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", nargs="*", type=Path, help="default: README.md and docs/**/*.md")
    ap.add_argument("--check", action="store_true", help="compare, write nothing; exit 1 "
                    "when a block differs")
    ap.add_argument("--fast", action="store_true", help="only the blocks marked fast")
    args = ap.parse_args(argv)
    pages = [p.resolve() for p in args.pages] or [ROOT / "README.md",
                                                   *sorted((ROOT / "docs").rglob("*.md"))]
    problems = []
    for path in pages:
        problems += page(path, check=args.check, fast_only=args.fast)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

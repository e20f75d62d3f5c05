"""The test suite's own rules: a failure anywhere in a test fails the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_an_assert_failing_in_a_helper_thread_fails_the_test(tmp_path):
    """pytest only warns about an exception in a thread; the project's configuration makes
    it an error, so a client thread's failed assert cannot pass unseen."""
    (tmp_path / "test_thread.py").write_text(
        "import threading\n"
        "def test_thread():\n"
        "    t = threading.Thread(target=lambda: (_ for _ in ()).throw(AssertionError('x')))\n"
        "    t.start(); t.join()\n")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
         str(tmp_path / "test_thread.py")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 1, out.stdout[-2000:]
    assert "1 failed" in out.stdout, out.stdout[-2000:]

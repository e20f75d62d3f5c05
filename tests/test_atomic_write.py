"""ltrr.state.atomic_write: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import numpy as np
import pytest

from ltrr.state import atomic_write, atomic_write_bytes


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "vectors.npy"
    atomic_write(path, lambda f: np.save(f, np.arange(4, dtype=np.float32)))
    assert np.load(path).tolist() == [0.0, 1.0, 2.0, 3.0]

    def half(f):
        f.write(b"\x93NUMPY half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half)
    assert np.load(path).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert sorted(p.name for p in path.parent.iterdir()) == ["vectors.npy"]
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"

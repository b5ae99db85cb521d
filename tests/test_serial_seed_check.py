"""benchmarks/serial_seed_check.py: the same seed twice gives the same file; a changed result
is reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import serial_seed_check


def test_same_seed_same_results_and_a_difference_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    serial_seed_check.run(a, replications=4, hours=2.0)
    serial_seed_check.run(b, replications=4, hours=2.0)
    assert serial_seed_check.compare(a, b) == 0
    data = dict(np.load(b))
    data["produced"] = data["produced"] + 1
    np.savez(b, **data)
    assert serial_seed_check.compare(a, b) == 1
    assert "differ" in capsys.readouterr().out

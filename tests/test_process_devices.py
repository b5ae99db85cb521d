"""A large batch spread over the CPU's cores (``physics.process.devices``) gives the same results,
bit for bit, as on one device: both engines, in fresh interpreters (the device count is fixed
when JAX's backend starts), one with ``TWIN_CPU_DEVICES=1`` and one with 2. 257 lanes: the
general engine pads them to 258, the serial path splits them 129 + 128."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from physics.process import devices

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from physics.process import api, engine, serial
from physics.process.devices import lane_devices
from physics.process.model import build, with_horizon
from scenes.lineparse import load_line, parse_line

GENERAL = '''
line: split-merge
stations:
  - {id: a, process_time: {dist: exponential, mean: 20}, failures: {mtbf: 900, mttr: 60},
     routing: round_robin}
  - {id: b1, process_time: {dist: lognormal, mean: 38, cv: 0.4}}
  - {id: b2, process_time: {dist: gamma, mean: 40, cv: 0.5},
     failures: {mtbf: 1800, mttr: 120, mode: time}}
  - {id: c, process_time: {dist: uniform, low: 15, high: 22}}
buffers:
  - {id: q1, from: a, to: b1, capacity: 2}
  - {id: q2, from: a, to: b2, capacity: 0}
  - {id: q3, from: b1, to: c, conveyor: {length: 2.0, speed: 0.5, pitch: 0.5}}
  - {id: q4, from: b2, to: c, capacity: 3}
'''
V = 257
keys = jax.random.split(jax.random.PRNGKey(4), V)
spec = load_line("benchmarks/lines/ten_serial.yaml")
sm, sp = serial.build_serial(spec)
sp = serial._with_horizon(sp, 0.5, 0.1)
sp = jax.tree.map(lambda a: jnp.broadcast_to(a, (V, *a.shape)), sp)
ser = serial.kpis_of(sm, sp, serial.run(sm, sp, keys), spec)
gm, gp = build(parse_line(GENERAL, check_meshes=False))
gen = engine.run(gm, api.batch_params(with_horizon(gp, hours=0.5, warmup_hours=0.1), V), keys)
out = {
    "devices": len(lane_devices(V, sp)),
    "serial": [np.asarray(x, dtype=float).ravel().tolist() for x in
               (ser.throughput_per_hour, ser.wip, ser.lead_time_mean, ser.busy, ser.blocked,
                ser.produced)],
    "general": [np.asarray(x, dtype=float).ravel().tolist() for x in jax.tree.leaves(gen)],
}
print(json.dumps(out))
"""


def _start(count: int, flags: str = "") -> subprocess.Popen[str]:
    env = {**os.environ, devices.ENV: str(count), "PYTHONPATH": str(ROOT), "XLA_FLAGS": flags}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def test_a_batch_spread_over_cores_gives_the_same_results() -> None:
    # side by side (each mostly compiles); the third with XLA:CPU's default 256-bit vectors,
    # where configure() asks for 512 on this CPU
    procs = [_start(1), _start(2), _start(1, "--xla_cpu_prefer_vector_width=256")]
    one, two, narrow = (_result(p) for p in procs)
    assert one["devices"] == 0 and two["devices"] == 2  # the second really was spread
    for engine in ("serial", "general"):
        a = one[engine]
        for other in (two[engine], narrow[engine]):
            assert isinstance(a, list) and isinstance(other, list) and len(a) == len(other)
            for x, y in zip(a, other, strict=True):
                assert np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)


COUNT = "--xla_force_host_platform_device_count"
WIDE = "--xla_cpu_prefer_vector_width=512"


@pytest.mark.parametrize("avx512", [False, True])
@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        ("", "", f"{COUNT}={min(os.cpu_count() or 1, 8)}"),
        ("", "3", f"{COUNT}=3"),
        ("", "1", ""),
        (f"{COUNT}=5", "3", f"{COUNT}=5"),
        ("--xla_cpu_prefer_vector_width=256", "1", "--xla_cpu_prefer_vector_width=256"),
    ],
)
def test_configure_sets_the_flags_unless_told(
    monkeypatch: pytest.MonkeyPatch, flags: str, env: str, expected: str, avx512: bool
) -> None:
    monkeypatch.setenv("XLA_FLAGS", flags)
    monkeypatch.setenv(devices.ENV, env)
    monkeypatch.setattr(devices, "has_avx512", lambda: avx512)
    devices.configure()
    if (os.cpu_count() or 1) == 1 and not env:
        expected = flags
    if avx512 and "vector_width" not in flags:  # added first, before the device count
        expected = f"{flags} {WIDE}".strip() if COUNT in flags else f"{WIDE} {expected}".strip()
    assert os.environ["XLA_FLAGS"] == expected


def test_avx512_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512dq\n")
    assert devices.has_avx512(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512_bf16\n")
    assert not devices.has_avx512(str(info))  # an extension is not the foundation
    assert not devices.has_avx512(str(tmp_path / "missing"))


def test_a_bad_device_count_is_named_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv(devices.ENV, "two")
    with pytest.warns(UserWarning, match="TWIN_CPU_DEVICES='two' is not a whole number"):
        devices.configure()

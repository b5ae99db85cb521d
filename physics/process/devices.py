"""Spreading a batch of lanes over the CPU's cores, one XLA device per core.

XLA:CPU runs one batched event step with the batch's arrays split across its threads only where
an operation is large enough; most of an event step is many small operations on one thread (the
general engine used 1.55 cores of 2 at 1,024 lanes). Asking XLA for one host device per core
(``--xla_force_host_platform_device_count``) and giving each device its own share of the lanes
keeps every core busy: the general engine at 1,024 lanes went from 0.72 to 1.08 million
completions per second on this 2-core machine, the serial fast path from 33 to 39 million.
Lanes never interact, so the results are the same, bit for bit, as on one device.

:func:`configure` sets the flag; it runs when ``physics.process`` is imported and takes effect
if no JAX backend has started yet (else the batch stays on one device). ``TWIN_CPU_DEVICES=N``
chooses the count (1: off); an ``XLA_FLAGS`` that already sets it is left alone. Accelerators
are not affected: a batch is spread only when the default backend is the CPU.

On a CPU with AVX-512, :func:`configure` also asks XLA:CPU for 512-bit vectors
(``--xla_cpu_prefer_vector_width=512``; its default is 256, like most compilers'). The process
core is mostly elementwise float64 arithmetic, eight numbers a 512-bit register against four: on
this machine's AMD EPYC the serial fast path went from 436-446x to 599-619x SimPy at 1,024
lanes, its results the same bit for bit (``docs/benchmarks.md``). An ``XLA_FLAGS`` that already
sets the width is left alone (``--xla_cpu_prefer_vector_width=256`` turns it off).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax

ENV = "TWIN_CPU_DEVICES"
_FLAG = "--xla_force_host_platform_device_count"
_WIDTH = "--xla_cpu_prefer_vector_width"
#: Lanes per device below which a batch stays on one device: the serial path's (one thread and
#: one compiled program per device: a small batch would pay more in compiling than it saves).
MIN_LANES_PER_DEVICE = 128
#: The general engine's (one program for all devices; 64 lanes on 2 devices: 0.35 -> 0.55
#: million completions per second).
MIN_LANES_PER_DEVICE_GENERAL = 32


def configure() -> None:
    """Ask XLA for one CPU device per core (at most 8), and for 512-bit vectors where the CPU
    has them, unless told otherwise."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _WIDTH not in flags and has_avx512():
        flags = f"{flags} {_WIDTH}=512".strip()
        os.environ["XLA_FLAGS"] = flags
    if _FLAG in flags:
        return
    wanted = os.environ.get(ENV, "").strip()
    count = min(os.cpu_count() or 1, 8)
    if wanted.isdigit():
        count = int(wanted)
    elif wanted:
        warnings.warn(
            f"{ENV}={wanted!r} is not a whole number; using {count} CPU device(s)", stacklevel=2
        )
    if count > 1:
        os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={count}".strip()


def has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU runs AVX-512 (its foundation, ``avx512f``), as Linux lists its flags;
    False where there is no such file."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split(":", 1)[-1].split()
    except OSError:
        pass
    return False


def lane_devices(lanes: int, params: Any, min_per_device: int = MIN_LANES_PER_DEVICE) -> list[Any]:
    """The devices to spread ``lanes`` lanes over: the CPU devices when the default backend is
    the CPU, there are several, each gets at least ``min_per_device``, and every array of
    ``params`` has one row per lane (a batch to split); else []."""
    if jax.default_backend() != "cpu":
        return []
    if any(a.shape[:1] != (lanes,) for a in jax.tree.leaves(params)):
        return []
    devices = jax.local_devices()
    n = min(len(devices), lanes // min_per_device)
    return devices[:n] if n > 1 else []

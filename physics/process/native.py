"""Hand-written CPU kernels for the process core, compiled on first use and called through XLA's
FFI (``jax.ffi``).

The serial fast path's (max,+) recursion is a loop over parts with a short chain of stations
inside: as XLA operations that is about 115 small kernels a part, each a few microseconds of
dispatch around a few hundred lanes of arithmetic. :data:`SOURCE` does one part as one pass over
the stations, each a loop over the lanes that the C++ compiler vectorizes. :data:`DRAWS_SOURCE`
draws the chunk's processing times (the samplers' many small kernels, and the gamma sampler's
retry rounds over the whole batch, in XLA) and a failing station's failures.
:data:`GENERAL_SOURCE` runs the general engine's events, each lane on its own
(:mod:`physics.process.general_native`). All compute exactly what the XLA versions compute,
with the same roundings: the results are the same bit for bit (tested).

The kernels are compiled into one library for the machine they run on (``-march=native``) the
first time they are needed, with the C++ compiler ``$CXX`` (default ``g++``) and the FFI headers
that ship with jaxlib, into a cache directory (``$TWIN_NATIVE_CACHE``, else
``twin-engine/native`` under ``$XDG_CACHE_HOME`` or ``~/.cache``), keyed by the sources, the
flags, the compiler, jaxlib and the CPU. A few seconds, once. ``TWIN_NATIVE=0`` turns the
kernels off (the XLA versions run: same results, slower). Where they cannot be built (no
compiler), the XLA versions run and a warning says why, once; :func:`build` raises the
compiler's message.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ENV = "TWIN_NATIVE"
CACHE_ENV = "TWIN_NATIVE_CACHE"
SOURCE = Path(__file__).with_name("csrc") / "serial_chunk.cc"
#: The processing times', failures' and lead-time histogram's kernels, compiled into the same
#: library.
DRAWS_SOURCE = SOURCE.with_name("serial_draws.cc")
#: The general engine's event loop (``general_chunk``), compiled into the same library.
GENERAL_SOURCE = SOURCE.with_name("general_chunk.cc")
#: The numerics the kernels share (included, so part of the cache key).
HEADERS = (SOURCE.with_name("twin_numerics.h"),)
TARGET = "twin_serial_chunk"
DRAWS = "twin_serial_draws"
DOWNTIME = "twin_serial_downtime"
HISTOGRAM = "twin_lead_histogram"
GENERAL = "twin_general_chunk"
FLAGS = (
    "-O3",
    "-march=native",
    "-ffp-contract=off",  # fused multiply-adds only where the source says (where XLA fuses)
    "-fno-math-errno",
    # comparisons of floats may be if-converted (without it, g++ 12 leaves the draws' lane loops
    # scalar); no value changes
    "-fno-trapping-math",
    "-std=c++17",
    "-shared",
    "-fPIC",
    # x86-64: 512-bit vectors where the CPU has AVX-512 (g++ prefers 256 bits on some; 1.5x on
    # the draws here). Other architectures do not know the option.
    *(("-mprefer-vector-width=512",) if platform.machine() in ("x86_64", "AMD64") else ()),
)


class NativeBuildError(RuntimeError):
    """The kernel could not be compiled or loaded; the message says why."""


_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried yet
_why: str | None = None


def enabled() -> bool:
    """Whether the kernels may be used at all (``TWIN_NATIVE`` is not ``0``)."""
    return os.environ.get(ENV, "1").strip() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "twin-engine" / "native"


def _cpu_identity() -> str:
    """The CPU's model and flags (what ``-march=native`` compiles for)."""
    lines = [platform.machine()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    lines.append(line.strip())
                if len(lines) >= 3:
                    break
    except OSError:
        pass
    return "\n".join(lines)


def build(*, force: bool = False) -> Path:
    """Compile :data:`SOURCE` (unless a build for this machine is cached) and return the shared
    library's path. Raises :class:`NativeBuildError` with the compiler's message."""
    cxx = os.environ.get("CXX", "g++")
    exe = shutil.which(cxx)
    if exe is None:
        raise NativeBuildError(
            f"no C++ compiler: {cxx!r} is not on PATH (install g++, e.g. "
            "`apt-get install g++`, or set CXX)"
        )
    try:
        version = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeBuildError(f"{cxx} --version failed: {exc}") from exc
    include = jax.ffi.include_dir()
    key = hashlib.sha256()
    sources = (SOURCE, DRAWS_SOURCE, GENERAL_SOURCE)
    hashed = (*sources, *HEADERS)
    for part in (*(p.read_bytes() for p in hashed), " ".join(FLAGS).encode(), version.encode()):
        key.update(part)
    key.update(f"{jax.__version__}\n{include}\n{_cpu_identity()}".encode())
    out_dir = cache_dir()
    lib = out_dir / f"serial_chunk-{key.hexdigest()[:20]}.so"
    if lib.exists() and not force:
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    # compiled beside its final name and renamed: concurrent builds (test workers) never see a
    # half-written library
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".so.tmp")
    os.close(fd)
    cmd = [exe, *FLAGS, "-isystem", include, *map(str, sources), "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise NativeBuildError(
                f"compiling {SOURCE.name} failed ({' '.join(cmd)}):\n{done.stderr.strip()}"
            )
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def load() -> None:
    """Build (if needed) and register the kernels with XLA; raises :class:`NativeBuildError`."""
    global _loaded, _why
    with _lock:
        if _loaded:
            return
        try:
            lib = ctypes.CDLL(str(build()))
            for name, symbol in (
                (TARGET, lib.TwinSerialChunk),
                (DRAWS, lib.TwinSerialDraws),
                (DOWNTIME, lib.TwinSerialDowntime),
                (HISTOGRAM, lib.TwinLeadHistogram),
                (GENERAL, lib.TwinGeneralChunk),
            ):
                capsule = jax.ffi.pycapsule(symbol)  # type: ignore[no-untyped-call]
                jax.ffi.register_ffi_target(name, capsule, platform="cpu")
        except NativeBuildError as exc:
            _loaded, _why = False, str(exc)
            raise
        except OSError as exc:
            _loaded, _why = False, f"loading the compiled kernel failed: {exc}"
            raise NativeBuildError(_why) from exc
        _loaded, _why = True, None


def available() -> bool:
    """Whether the kernels are enabled and built (building them on the first call). Where they
    cannot be built, warns once with the reason and returns False."""
    if not enabled():
        return False
    if _loaded is None:
        try:
            load()
        except NativeBuildError as exc:
            warnings.warn(
                f"the process core's native kernels are off, the XLA versions run: {exc}",
                stacklevel=2,
            )
    return bool(_loaded)


def why_unavailable() -> str | None:
    """The reason the last build failed, or None."""
    return _why


def serial_chunk(
    lo: jax.Array,
    hi: jax.Array,
    capacity: jax.Array,
    transit: jax.Array,
    repair_of: Sequence[int],
    fk: jax.Array,
    starts: jax.Array,
    fv: jax.Array,
    produced: jax.Array,
    delivered: jax.Array,
    serv: Sequence[jax.Array],
    repairs: Sequence[jax.Array],
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """One chunk of the serial recursion (``csrc/serial_chunk.cc`` documents the layout): the new
    ``fk``, ``starts``, ``fv``, ``produced``, ``delivered``, and the lead times (n, V) (NaN: none in
    the window)."""
    like = (fk, starts, fv, produced, delivered)
    outs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in like]  # type: ignore[no-untyped-call]
    n, v = serv[0].shape[0], lo.shape[0]
    outs.append(jax.ShapeDtypeStruct((n, v), jnp.float64))  # type: ignore[no-untyped-call]
    call = jax.ffi.ffi_call(TARGET, outs)
    idx = jnp.asarray(np.asarray(repair_of, dtype=np.int32))
    res = call(
        lo,
        hi,
        capacity,
        transit,
        idx,
        fk,
        starts,
        fv,
        produced,
        delivered,
        *serv,
        *repairs,
    )
    a, b, c, d, e, f = res
    return a, b, c, d, e, f


#: ``csrc/serial_draws.cc``'s numbers for the distribution families.
DRAW_KINDS = {
    "deterministic": 0,
    "exponential": 1,
    "lognormal": 2,
    "uniform": 3,
    "gamma": 4,
    "empirical": 5,
}


def serial_draws(
    n: int,
    seed: jax.Array,
    j: jax.Array,
    kinds: Sequence[str],
    a: jax.Array,
    b: jax.Array,
    gseed: jax.Array,
    gpar: jax.Array,
    values: jax.Array,
    nvalues: jax.Array,
) -> jax.Array:
    """Processing times of parts ``j .. j + n - 1`` of every lane and station, (K, n, V):
    what ``serial._samples`` draws with XLA, bit for bit (``csrc/serial_draws.cc`` documents the
    arguments)."""
    k, v = a.shape
    out = jax.ShapeDtypeStruct((k, n, v), jnp.float64)  # type: ignore[no-untyped-call]
    codes = jnp.asarray(np.asarray([DRAW_KINDS[x] for x in kinds], dtype=np.int32))
    res: jax.Array = jax.ffi.ffi_call(DRAWS, out)(
        seed, j, codes, a, b, gseed, gpar, values, nvalues
    )
    return res


def serial_downtime(
    proc: jax.Array,
    seed: jax.Array,
    mtbf: jax.Array,
    mttr: jax.Array,
    since: jax.Array,
    count: jax.Array,
    block: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One failing station's repair time by part (n, V) and its failure clock after the chunk
    (busy time since the last failure, failures so far; (V,) each), from its processing times
    ``proc`` (n, V): what ``serial._downtime`` computes with XLA for the station, bit for bit
    (``block``: its failures drawn at a time; ``csrc/serial_draws.cc`` says how)."""
    n, v = proc.shape
    outs = (
        jax.ShapeDtypeStruct((n, v), jnp.float64),  # type: ignore[no-untyped-call]
        jax.ShapeDtypeStruct((v,), jnp.float64),  # type: ignore[no-untyped-call]
        jax.ShapeDtypeStruct((v,), jnp.int32),  # type: ignore[no-untyped-call]
    )
    rep, since_out, count_out = jax.ffi.ffi_call(DOWNTIME, outs)(
        proc, seed, mtbf, mttr, since, count, jnp.asarray([block], jnp.int32)
    )
    return rep, since_out, count_out


def lead_histogram(hist: jax.Array, leads: jax.Array, edges: jax.Array) -> jax.Array:
    """``model.add_lead_times(hist, leads, lane)`` for lead times ``leads`` (n, V) of lanes
    ``0 .. V - 1`` and ``hist`` (V, B) int32 on ``edges`` (B + 1): the same counts, updated in
    place where XLA lets it."""
    out = jax.ShapeDtypeStruct(hist.shape, hist.dtype)  # type: ignore[no-untyped-call]
    call = jax.ffi.ffi_call(HISTOGRAM, out, input_output_aliases={0: 0})
    res: jax.Array = call(hist, leads, edges)
    return res


def general_chunk(
    topo: jax.Array,
    key: jax.Array,
    pf: jax.Array,
    pi: jax.Array,
    edges: jax.Array,
    ctl: jax.Array,
    sf: jax.Array,
    si: jax.Array,
    hist: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Up to ``ctl[0]`` steps of the general engine for every lane, on ``ctl[1]`` threads: the
    new ``sf``, ``si`` and ``hist``, updated in place where XLA lets it
    (``csrc/general_chunk.cc`` documents the layout; ``general_native`` packs it)."""
    outs = tuple(
        jax.ShapeDtypeStruct(a.shape, a.dtype)  # type: ignore[no-untyped-call]
        for a in (sf, si, hist)
    )
    call = jax.ffi.ffi_call(GENERAL, outs, input_output_aliases={6: 0, 7: 1, 8: 2})
    a, b, c = call(topo, key, pf, pi, edges, ctl, sf, si, hist)
    return a, b, c

"""The browser viewer under load: frame rate and main-thread time per frame in headless Chromium.

The largest example line (``scenes/examples/*.yaml``, most stations, then most scene entities)
is built the way ``twin serve`` builds it (``scenes.assets.publish_scene`` into a temporary
asset folder, every scene-graph entity added to a ``SceneStore`` with the props
``twin.simline.entity_props`` gives it), plus ``--parts`` entities of kind ``part`` (5,000 by
default) that all move every tick along the line's conveyor paths, at each conveyor's speed,
wrapping round at the end (a loop through the stations is added when the line has fewer than
two conveyors). A ``TwinServer`` with a 30 Hz hub serves it in its own process (spawned), so
that the server's CPU and the browser's are measured apart.

Headless Chromium (``/usr/bin/chromium`` through Playwright, software WebGL: SwiftShader) opens
the viewer at 1280x720, waits until it is connected and holds every part, warms up, then
measures a window (``--seconds``):

- frames per second: ``twinViewer.stats.rafs`` (the viewer's ``requestAnimationFrame``
  callbacks) over the page's ``performance.now()``; frame intervals (p50, p95, max) from a
  second rAF callback recording timestamps;
- viewer JS per frame: the viewer's own ``applyMs + renderMs`` (apply the pending frames, then
  interpolate, KPIs, three.js render submission, labels, mini-map) / frames;
- main-thread busy time per frame as Chrome measures it: the DevTools Protocol's
  ``Performance.getMetrics`` (``TaskDuration``, ``ScriptDuration``, ``LayoutDuration``,
  ``RecalcStyleDuration``) / frames;
- CPU per Chromium process type and thread (``/proc``: the renderer's main thread, its worker
  that decodes msgpack, the GPU process's threads that rasterize in software...);
- deltas applied per second and the server's ticks, frames encoded, frames skipped for
  back-pressure and CPU.

``--profile`` adds a CDP sampling profile of the page over the window (top functions by self
time).

    make env                                        # once: three.js into viewer/static/vendor
    .venv/bin/python benchmarks/bench_viewer.py                      # 5,000 parts, 10 s
    .venv/bin/python benchmarks/bench_viewer.py --parts 1000 --seconds 5 --json
    .venv/bin/python benchmarks/bench_viewer.py --profile
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import platform
import re
import resource
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STATIC = ROOT / "viewer" / "static"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: CDP ``Performance.getMetrics`` durations reported per frame (seconds, main thread).
CDP_DURATIONS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")

_RENDERER_JS = """() => {
  const c = document.createElement('canvas');
  const gl = c.getContext('webgl2') || c.getContext('webgl');
  if (!gl) return null;
  const e = gl.getExtension('WEBGL_debug_renderer_info');
  return {
    version: gl.getParameter(gl.VERSION),
    renderer: e ? gl.getParameter(e.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER),
    vendor: e ? gl.getParameter(e.UNMASKED_VENDOR_WEBGL) : gl.getParameter(gl.VENDOR),
  };
}"""

_SAMPLE_JS = """() => ({
  now: performance.now(),
  stats: Object.assign({}, twinViewer.stats),
  parts: twinViewer.parts(),
  machines: twinViewer.machines(),
  status: twinViewer.status,
})"""

# A second rAF callback that records frame timestamps (for the interval distribution).
_RECORD_JS = """() => {
  window.__benchT = [];
  const f = (t) => { if (window.__benchT) { window.__benchT.push(t); requestAnimationFrame(f); } };
  requestAnimationFrame(f);
}"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One run: the line, how many moving parts, the hub's rate, warm-up and window (s)."""

    line: str
    parts: int = 5000
    tick_hz: float = 30.0
    warmup_s: float = 3.0
    seconds: float = 10.0
    width: int = 1280
    height: int = 720
    profile: bool = False


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the line ------------------------------------------------------------------------------------


def pick_line(folder: Path = ROOT / "scenes" / "examples") -> tuple[Path, int, int]:
    """The example line with the most stations (ties: most scene entities, then name).

    Returns ``(path, stations, entities)``; ``*.space.yaml`` and ``*.scenario.yaml`` are not
    lines and are skipped."""
    from scenes.graph import build_graph
    from scenes.lineparse import load_line

    best: tuple[int, int, str] | None = None
    for f in sorted(folder.glob("*.yaml")):
        if f.name.endswith((".space.yaml", ".scenario.yaml")):
            continue
        spec = load_line(f)
        key = (len(spec.stations), len(build_graph(spec).entities), f.name)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        raise SystemExit(f"no example line in {folder}")
    return folder / best[2], best[0], best[1]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Track:
    """A polyline parts run along: ``pts`` (k, 3) world metres, ``s`` (k,) arc length at each
    point, ``speed`` m/s, and the slice of parts on it."""

    pts: NDArray[np.float64]
    s: NDArray[np.float64]
    speed: float
    first: int
    count: int

    @property
    def length(self) -> float:
        return float(self.s[-1])


def _tracks(graph: Any, parts: int) -> list[_Track]:
    """The conveyor paths (a loop through the stations as well, with fewer than two), with the
    parts shared out in proportion to length (at least one each)."""
    from scenes.graph import ConveyorGeometry

    polys: list[tuple[NDArray[np.float64], float]] = []
    for e in graph.entities:
        if isinstance(e.geometry, ConveyorGeometry):
            pts = np.asarray(graph.conveyor_path(e.ref).points, np.float64)
            polys.append((pts, e.geometry.speed or 0.5))
    if len(polys) < 2:
        stations = [
            graph.world_transform(e.id).position
            for e in graph.entities
            if e.kind.value == "station"
        ]
        loop = np.asarray(stations + stations[:1], np.float64)
        loop[:, 2] = 1.0
        polys.append((loop, 0.5))
    lengths = []
    for pts, _ in polys:
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        lengths.append(np.concatenate([[0.0], np.cumsum(seg)]))
    polys_ok = [(p, v, s) for (p, v), s in zip(polys, lengths, strict=True) if s[-1] > 0]
    total = sum(s[-1] for _, _, s in polys_ok)
    shares = [max(1, math.floor(parts * s[-1] / total)) for _, _, s in polys_ok]
    shares[int(np.argmax(shares))] += parts - sum(shares)
    tracks, first = [], 0
    for (pts, v, s), n in zip(polys_ok, shares, strict=True):
        tracks.append(_Track(pts=pts, s=s, speed=v, first=first, count=n))
        first += n
    return tracks


# -- server process ------------------------------------------------------------------------------


def server_main(pipe: Connection, sc: Scenario) -> None:
    """Entry point of the server process: build the scene, serve, answer marks until stopped."""
    asyncio.run(_serve(pipe, sc))


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _serve(pipe: Connection, sc: Scenario) -> None:
    from scenes.assets import AssetStore, publish_scene
    from scenes.lineparse import load_line
    from streaming.auth import TokenBook
    from streaming.hub import Hub
    from streaming.server import ServerConfig, TwinServer
    from streaming.store import SceneStore
    from twin.simline import entity_props

    spec = load_line(sc.line)
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        assets = AssetStore(tmp)
        graph = publish_scene(spec, assets)
        store = SceneStore(capacity=sc.parts + 256)
        for e in graph.entities:
            wt = graph.world_transform(e.id)
            store.add(
                e.id,
                e.kind.value,
                props=entity_props(graph, e.id),
                pos=wt.position,
                quat=wt.rotation,
            )
            if e.kind.value == "station":
                store.update(
                    e.id, {"state": "busy", "produced": 0, "scrapped": 0, "busy": 1, "servers": 1}
                )
            elif e.kind.value == "buffer":
                store.update(e.id, {"level": 0, "capacity": 10})
        tracks = _tracks(graph, sc.parts)
        handles = np.empty(sc.parts, np.int64)
        offsets = np.empty(sc.parts, np.float64)
        rng = np.random.default_rng(0)
        for k, tr in enumerate(tracks):
            for i in range(tr.first, tr.first + tr.count):
                handles[i] = store.add(f"part/track{k}/{i}", "part", props={"buffer": f"track{k}"})
            offsets[tr.first : tr.first + tr.count] = rng.uniform(0, tr.length, tr.count)
        pos = np.empty((sc.parts, 3), np.float32)
        t0 = time.time()

        def source(st: SceneStore, wall: float) -> float:
            """Move every part along its track (every position changes every tick)."""
            t = wall - t0
            for tr in tracks:
                sl = slice(tr.first, tr.first + tr.count)
                d = np.mod(offsets[sl] + tr.speed * t, tr.length)
                for axis in range(3):
                    pos[sl, axis] = np.interp(d, tr.s, tr.pts[:, axis])
            st.set_transforms(handles, pos)
            st.update("line", {"sim_time": t, "wip": sc.parts, "speed": 1.0, "paused": False})
            return t

        source(store, t0)
        hub = Hub(store, tick_hz=sc.tick_hz)
        book, token = TokenBook.generated()
        config = ServerConfig(host="127.0.0.1", port=0, static_dir=STATIC)
        server = TwinServer(hub, book, config, source=source, assets=assets)
        loop = asyncio.get_running_loop()
        async with server:
            pipe.send(("listening", server.port, token, len(store), len(tracks)))
            while True:
                msg = await loop.run_in_executor(None, pipe.recv)
                if msg[0] != "mark":
                    break
                pipe.send(
                    (
                        "mark",
                        {
                            "wall": time.time(),
                            "cpu_s": _cpu_s(),
                            "ticks": server.ticks,
                            "overruns": server.overruns,
                            "tick_s": server.tick_seconds,
                            "metrics": dict(hub.metrics),
                        },
                    )
                )


# -- Chromium's processes ------------------------------------------------------------------------


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children[ppid].append(int(d.name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def chromium_cpu(root: int = 0) -> dict[tuple[str, str], float]:
    """CPU seconds (user + system) of every Chromium thread below this process, keyed by
    (process type, thread name). Types: ``browser``, ``renderer``, ``gpu-process``,
    ``utility``...; a process's main thread is ``main`` (Chromium names them all after the
    executable)."""
    tck = os.sysconf("SC_CLK_TCK")
    out: dict[tuple[str, str], float] = defaultdict(float)
    for pid in _descendants(root or os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            exe = cmd.split(b"\0", 1)[0].split(b" ", 1)[0]
            if b"chrom" not in Path(exe.decode(errors="replace")).name.encode():
                continue
            # renderers rewrite their argv into one string: search the whole command line
            m = re.search(rb"--type=([a-z-]+)", cmd)
            kind = m.group(1).decode() if m else "browser"
            for task in Path(f"/proc/{pid}/task").iterdir():
                stat = (task / "stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                name = "main" if task.name == str(pid) else name
                f = stat[stat.rindex(")") + 2 :].split()
                out[(kind, name)] += (int(f[11]) + int(f[12])) / tck
        except OSError:
            continue
    return out


def ours_cpu_s() -> float:
    """CPU seconds of this process and everything below it (server, driver, Chromium)."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in [os.getpid(), *_descendants(os.getpid())]:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2 :].split()
        total += (int(f[11]) + int(f[12])) / tck
    return total


def _machine_busy_s() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# -- the browser ---------------------------------------------------------------------------------


def _metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: float(m["value"]) for m in cdp.send("Performance.getMetrics")["metrics"]}


def _top_functions(profile: dict[str, Any], n: int = 15) -> list[dict[str, Any]]:
    """Self time per function (ms) from a CDP ``Profiler.stop`` profile."""
    nodes = {node["id"]: node for node in profile["nodes"]}
    self_us: dict[str, float] = defaultdict(float)
    for node_id, dt in zip(profile["samples"], profile["timeDeltas"], strict=True):
        cf = nodes[node_id]["callFrame"]
        where = Path(cf["url"]).name if cf["url"] else ""
        name = cf["functionName"] or "(anonymous)"
        key = f"{name} {where}:{cf['lineNumber'] + 1}" if where else name
        self_us[key] += dt
    total = sum(self_us.values()) or 1.0
    top = sorted(self_us.items(), key=lambda kv: -kv[1])[:n]
    return [{"function": k, "self_ms": v / 1e3, "share": v / total} for k, v in top]


def run_browser(sc: Scenario, port: int, token: str, srv: Connection) -> dict[str, Any]:
    """Open the viewer, wait for every part, warm up, measure one window."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": sc.width, "height": sc.height})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            gl = page.evaluate(_RENDERER_JS)
            t_open = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/#token={token}")
            page.wait_for_function(
                f"window.twinViewer && twinViewer.status === 'connected' && "
                f"twinViewer.parts() >= {sc.parts}",
                timeout=90_000,
            )
            loaded_s = time.perf_counter() - t_open
            _progress(
                f"viewer holds {sc.parts} parts after {loaded_s:.1f} s; warm-up {sc.warmup_s:g} s"
            )
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable", {"timeDomain": "timeTicks"})
            time.sleep(sc.warmup_s)
            if sc.profile:
                cdp.send("Profiler.enable")
                cdp.send("Profiler.setSamplingInterval", {"interval": 200})
                cdp.send("Profiler.start")
            page.evaluate(_RECORD_JS)
            srv.send(("mark",))
            s_a = srv.recv()[1]
            c_a, busy_a, ours_a = chromium_cpu(), _machine_busy_s(), ours_cpu_s()
            m_a, v_a = _metrics(cdp), page.evaluate(_SAMPLE_JS)
            _progress(f"measuring {sc.seconds:g} s")
            time.sleep(sc.seconds)
            m_b, v_b = _metrics(cdp), page.evaluate(_SAMPLE_JS)
            c_b, busy_b, ours_b = chromium_cpu(), _machine_busy_s(), ours_cpu_s()
            srv.send(("mark",))
            s_b = srv.recv()[1]
            stamps = page.evaluate(
                "() => { const t = window.__benchT; window.__benchT = null; return t; }"
            )
            top = _top_functions(cdp.send("Profiler.stop")["profile"]) if sc.profile else []
            version = browser.version
        finally:
            browser.close()
    return _summary(
        sc,
        gl,
        version,
        loaded_s,
        (v_a, v_b),
        (m_a, m_b),
        (c_a, c_b),
        (s_a, s_b),
        busy_b - busy_a,
        ours_b - ours_a,
        stamps,
        top,
        errors,
    )


def _summary(
    sc: Scenario,
    gl: dict[str, str] | None,
    version: str,
    loaded_s: float,
    viewer: tuple[dict[str, Any], dict[str, Any]],
    cdp: tuple[dict[str, float], dict[str, float]],
    cpu: tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]],
    server: tuple[dict[str, Any], dict[str, Any]],
    busy_s: float,
    ours_s: float,
    stamps: list[float],
    top: list[dict[str, Any]],
    errors: list[str],
) -> dict[str, Any]:
    (va, vb), (ma, mb), (ca, cb), (sa, sb) = viewer, cdp, cpu, server
    wall = (vb["now"] - va["now"]) / 1e3
    rafs = max(1, vb["stats"]["rafs"] - va["stats"]["rafs"])
    apply_ms = vb["stats"]["applyMs"] - va["stats"]["applyMs"]
    render_ms = vb["stats"]["renderMs"] - va["stats"]["renderMs"]
    deltas = vb["stats"]["deltas"] - va["stats"]["deltas"]
    iv = np.diff(np.asarray(stamps, np.float64)) if len(stamps) > 1 else np.zeros(1)
    main = {k: (mb.get(k, 0.0) - ma.get(k, 0.0)) * 1e3 / rafs for k in CDP_DURATIONS}
    threads: dict[str, float] = defaultdict(float)
    procs: dict[str, float] = defaultdict(float)
    for key, v in cb.items():
        d = (v - ca.get(key, 0.0)) / wall
        procs[key[0]] += d
        threads[f"{key[0]}/{key[1]}"] += d
    srv_wall = sb["wall"] - sa["wall"]
    mkeys = set(sa["metrics"]) | set(sb["metrics"])
    return {
        "line": Path(sc.line).name,
        "parts": sc.parts,
        "viewport": f"{sc.width}x{sc.height}",
        "window_s": wall,
        "chromium": version,
        "webgl": gl,
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "load_s": loaded_s,
        "parts_drawn": vb["parts"],
        "machines_drawn": vb["machines"],
        "status": vb["status"],
        "fps": rafs / wall,
        "frame_interval_ms_p50": float(np.percentile(iv, 50)),
        "frame_interval_ms_p95": float(np.percentile(iv, 95)),
        "frame_interval_ms_max": float(iv.max()),
        "viewer_js_ms_per_frame": (apply_ms + render_ms) / rafs,
        "apply_ms_per_frame": apply_ms / rafs,
        "render_ms_per_frame": render_ms / rafs,
        "apply_ms_per_delta": apply_ms / max(1, deltas),
        "main_thread_ms_per_frame": main["TaskDuration"],
        "script_ms_per_frame": main["ScriptDuration"],
        "layout_ms_per_frame": main["LayoutDuration"],
        "style_ms_per_frame": main["RecalcStyleDuration"],
        "main_thread_busy_frac": main["TaskDuration"] * rafs / 1e3 / wall,
        "deltas_per_s": deltas / wall,
        "moved_per_s": deltas / wall * sc.parts,
        "chromium_cores": dict(sorted(procs.items(), key=lambda kv: -kv[1])),
        "chromium_threads_cores": {
            k: v for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v >= 0.01
        },
        "server_ticks_per_s": (sb["ticks"] - sa["ticks"]) / srv_wall,
        "server_overruns": sb["overruns"] - sa["overruns"],
        "server_cores": (sb["cpu_s"] - sa["cpu_s"]) / srv_wall,
        "server_tick_ms": (sb["tick_s"] - sa["tick_s"]) * 1e3 / max(1, sb["ticks"] - sa["ticks"]),
        "server_metrics": {
            k: sb["metrics"].get(k, 0) - sa["metrics"].get(k, 0)
            for k in sorted(mkeys)
            if sb["metrics"].get(k, 0) != sa["metrics"].get(k, 0)
        },
        "machine_busy_cores": busy_s / wall,
        "other_load_cores": (busy_s - ours_s) / wall,
        "renderer_main_cpu_ms_per_frame": threads.get("renderer/main", 0.0) * wall * 1e3 / rafs,
        "gpu_process_cores": procs.get("gpu-process", 0.0),
        "profile_top": top,
        "console_errors": errors,
    }


def measure(sc: Scenario) -> dict[str, Any]:
    """A fresh server process and browser; one window."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    srv = ctx.Process(target=server_main, args=(child, sc), daemon=True)
    srv.start()
    try:
        if not parent.poll(120.0):
            raise TimeoutError("the server process did not start within 120 s")
        _, port, token, n_entities, n_tracks = parent.recv()
        _progress(f"server on port {port}: {n_entities} entities, parts on {n_tracks} tracks")
        res = run_browser(sc, port, token, parent)
        res["entities"] = n_entities
        res["tracks"] = n_tracks
    finally:
        if srv.is_alive():
            parent.send(("stop",))
            srv.join(15.0)
            if srv.is_alive():
                srv.terminate()
    return res


# -- output --------------------------------------------------------------------------------------


def _table(r: dict[str, Any]) -> str:
    gl = r["webgl"] or {}
    rows = [
        (
            "line",
            f"{r['line']} ({r['entities'] - r['parts']} scene entities, {r['tracks']} tracks)",
        ),
        ("moving parts", f"{r['parts']:,} (drawn: {r['parts_drawn']:,})"),
        ("viewport", r["viewport"]),
        ("Chromium", f"{r['chromium']} headless"),
        ("WebGL renderer", gl.get("renderer", "none")),
        ("window", f"{r['window_s']:.1f} s"),
        ("frames per second", f"{r['fps']:.1f}"),
        (
            "frame interval p50 / p95 / max",
            f"{r['frame_interval_ms_p50']:.1f} / {r['frame_interval_ms_p95']:.1f} / "
            f"{r['frame_interval_ms_max']:.1f} ms",
        ),
        (
            "viewer JS per frame (apply + render)",
            f"{r['viewer_js_ms_per_frame']:.2f} ms "
            f"({r['apply_ms_per_frame']:.2f} + {r['render_ms_per_frame']:.2f})",
        ),
        ("apply per delta", f"{r['apply_ms_per_delta']:.2f} ms"),
        (
            "main thread per frame (CDP tasks)",
            f"{r['main_thread_ms_per_frame']:.2f} ms (busy {100 * r['main_thread_busy_frac']:.0f}%)",
        ),
        (
            "  script / layout / style",
            f"{r['script_ms_per_frame']:.2f} / {r['layout_ms_per_frame']:.2f} / "
            f"{r['style_ms_per_frame']:.2f} ms",
        ),
        ("deltas applied per second", f"{r['deltas_per_s']:.1f} ({r['moved_per_s']:,.0f} poses/s)"),
        (
            "server ticks/s, tick, CPU",
            f"{r['server_ticks_per_s']:.1f}/s, {r['server_tick_ms']:.2f} ms, "
            f"{r['server_cores']:.2f} cores ({r['server_overruns']} overruns)",
        ),
        (
            "server frames",
            ", ".join(f"{k} {v}" for k, v in r["server_metrics"].items()) or "none",
        ),
        ("Chromium CPU (cores)", ", ".join(f"{k} {v:.2f}" for k, v in r["chromium_cores"].items())),
        (
            "renderer main thread CPU per frame",
            f"{r['renderer_main_cpu_ms_per_frame']:.2f} ms",
        ),
        (
            "machine busy (cores)",
            f"{r['machine_busy_cores']:.2f} of {r['cores']} "
            f"(other processes: {r['other_load_cores']:.2f})",
        ),
    ]
    w = max(len(k) for k, _ in rows)
    out = [f"{k:<{w}}  {v}" for k, v in rows]
    out.append("Chromium threads (cores):")
    out += [f"  {k:<40} {v:.2f}" for k, v in list(r["chromium_threads_cores"].items())[:10]]
    if r["profile_top"]:
        out.append("page profile, self time:")
        out += [
            f"  {t['self_ms']:8.0f} ms {100 * t['share']:5.1f}%  {t['function']}"
            for t in r["profile_top"]
        ]
    if r["console_errors"]:
        out.append(f"console errors: {r['console_errors'][:3]}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=int, default=5000, help="moving parts (default 5000)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window (default 10)")
    ap.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (default 3)")
    ap.add_argument("--line", help="line file (default: the largest example line)")
    ap.add_argument("--profile", action="store_true", help="CDP sampling profile of the page")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if not (STATIC / "vendor" / "three").is_dir():
        print("error: viewer/static/vendor/three is missing: run `make env` first", file=sys.stderr)
        return 2
    if not Path(CHROMIUM).is_file():
        print(f"error: {CHROMIUM} is missing (Debian's chromium package)", file=sys.stderr)
        return 2
    if args.line:
        line, stations = Path(args.line), -1
    else:
        line, stations, entities = pick_line()
        _progress(f"largest example line: {line.name} ({stations} stations, {entities} entities)")
    sc = Scenario(
        line=str(line),
        parts=args.parts,
        seconds=args.seconds,
        warmup_s=args.warmup,
        profile=args.profile,
    )
    res = measure(sc)
    res["stations"] = stations
    res["scenario"] = asdict(sc)
    if args.json:
        print(json.dumps(res))
    else:
        print(_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

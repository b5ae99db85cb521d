"""``twin serve FILE``: serve a line's twin to viewers over WebSockets (protocol ``twin.v1``).

The line runs in the process core in simulated real time (``--speed`` simulated seconds per
second) until telemetry drives it. The browser viewer is at ``http://HOST:PORT/``; programs
connect to ``ws://HOST:PORT/ws`` with a token (docs/protocol.md); meshes come from
``http://HOST:PORT/assets/SHA256.glb``. Without ``--tokens`` an admin token is generated and
printed once, with a link that signs the browser in. Every command, accepted or refused, is
appended to the audit log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twin.live.sources import parse_source

if TYPE_CHECKING:
    from streaming.auth import AuditRecord
    from streaming.hub import Hub
    from streaming.store import SceneStore
    from twin.live.mirror import Record
    from twin.simline import SimulatedLine

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a line's live twin to viewers (WebSocket + HTTP)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="line file (YAML)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument(
        "--tick-hz", type=float, default=30.0, help="frames a second, 10-60 (default 30)"
    )
    p.add_argument(
        "--tokens", metavar="FILE", help="tokens file: a YAML list of {name, role, token}"
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per wall-clock second (default 1)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed of the simulation (default 1)")
    p.add_argument(
        "--audit",
        default="out/audit.jsonl",
        help="append-only audit log of commands (default out/audit.jsonl)",
    )
    p.add_argument("--assets", default="out/assets", help="content-addressed asset folder")
    p.add_argument(
        "--origin",
        action="append",
        default=[],
        metavar="URL",
        help="also allow browser pages from this origin (repeatable)",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="serve wss:// and https:// with this cert")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.add_argument(
        "--robots",
        action="store_true",
        help="run the line's robot cells in pybullet (worker processes) and stream their links",
    )
    p.add_argument(
        "--robot-times",
        choices=("file", "physics"),
        default="file",
        help="with --robots: robot stations' process times from the line file (default) or "
        "measured from one physical pick-and-place cycle per cell",
    )
    p.add_argument(
        "--variants",
        metavar="RESULTS",
        help="a twin sweep results table: designers switch the line between its Pareto-front "
        "variants in the viewer and compare two side by side",
    )
    p.add_argument(
        "--source",
        metavar="SOURCE",
        help="mirror a real line instead of simulating one: embedded (a simulated plant, no "
        "broker), push (gateways push over this server's WebSocket with gateway tokens), "
        "mqtt://HOST:PORT[?sparkplug=1], opcua://HOST:PORT/PATH or replay:LOG[?speed=X]",
    )
    p.add_argument(
        "--record",
        default="out/record.sqlite",
        metavar="PATH",
        help="with --source: the durable record of telemetry and commands (SQLite; "
        "default out/record.sqlite; 'none' to keep none)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until interrupted)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 10 <= args.tick_hz <= 60:
        print("error: --tick-hz must be within 10..60", file=sys.stderr)
        return 2
    if not 0.1 <= args.speed <= 1000:
        print("error: --speed must be within 0.1..1000", file=sys.stderr)
        return 2
    if args.source:
        try:
            parse_source(args.source)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args))


def build_app(
    file: str | Path,
    *,
    speed: float = 1.0,
    seed: int = 1,
    tick_hz: float = 30.0,
    assets_dir: str | Path = "out/assets",
    audit: Callable[[AuditRecord], None] | None = None,
    live: bool = False,
    recorder: Record | None = None,
    robots: bool = False,
    robot_times: str = "file",
    variants: str | Path | None = None,
) -> tuple[SceneStore, Hub, SimulatedLine]:
    """The line's store, hub and simulation (or, with ``live``, its mirror fed by telemetry:
    a :class:`twin.live.mirror.LiveLine`), wired together (used by ``serve`` and tests).

    Returns ``(store, hub, line)``; ``audit`` is a callable taking audit records, or None.
    """
    from scenes.assets import AssetStore, publish_scene
    from scenes.lineparse import load_line
    from streaming.hub import CommandRegistry, Hub
    from streaming.store import SceneStore
    from twin.simline import SimulatedLine

    spec = load_line(file)
    graph = publish_scene(spec, AssetStore(assets_dir))
    cells = None
    if robots:
        from twin.robots import RobotCells

        cells = RobotCells(spec, AssetStore(assets_dir))
        if robot_times == "physics":
            spec = with_process_times(spec, cells.cycle_times())
    store = SceneStore()
    registry = CommandRegistry()
    hub = Hub(store, tick_hz=tick_hz, commands=registry, audit=audit)
    sim: SimulatedLine
    if live:
        from twin.live.mirror import LiveLine

        sim = LiveLine(spec, graph, recorder=recorder, on_alarm=hub.post_alarm)
    else:
        sim = SimulatedLine(spec, graph, seed=seed, speed=speed, on_alarm=hub.post_alarm)
    if cells is not None:
        sim.attach_robots(cells)
    sim.populate(store)
    sim.register_commands(registry, store)
    if variants is not None:
        from twin.variants import Variants

        chooser = Variants(variants, sim)
        chooser.populate(store)
        chooser.register_commands(registry, store)
    return store, hub, sim


def with_process_times(spec: Any, seconds: dict[str, float]) -> Any:
    """``spec`` with the stations in ``seconds`` working for exactly that long (deterministic)."""
    import dataclasses

    from scenes.spec import Distribution

    stations = tuple(
        dataclasses.replace(st, process_time=Distribution.deterministic(seconds[st.id]))
        if st.id in seconds
        else st
        for st in spec.stations
    )
    return dataclasses.replace(spec, stations=stations)


def settle_heap() -> None:
    """Collect once, then move every object alive into the garbage collector's permanent
    generation (``gc.freeze``), once the twin is set up.

    JAX, the compiled process core and the scene leave some 10^5 long-lived objects, which every
    full collection walks: a 15-40 ms pause of the event loop each time one runs, several times
    a second while telemetry streams in (``docs/benchmarks.md``, ingest: the JSON p99 at 10,000
    updates/s fell from 38 to 12-14 ms). Frozen objects are never collected, so this is done
    once, after start-up, when what is alive is meant to stay."""
    gc.collect()
    gc.freeze()


async def _serve(args: argparse.Namespace) -> int:
    from scenes.assets import AssetStore
    from streaming.auth import AuditLog, TokenBook
    from streaming.server import ServerConfig, TwinServer

    tokens_note = None
    if args.tokens:
        tokens = TokenBook.load(args.tokens)
    else:
        tokens, token = TokenBook.generated()
        tokens_note = token
    audit = AuditLog(args.audit)
    source = parse_source(args.source) if args.source else None
    recorder = None
    write_audit: Callable[[AuditRecord], None] = audit.write
    if source is not None and args.record != "none":
        from twin.live.recorder import Recorder

        recorder = Recorder(args.record)

        def write_audit(rec: AuditRecord) -> None:
            audit.write(rec)
            recorder.append_command(rec)
            recorder.flush()

    store, hub, sim = build_app(
        args.file,
        speed=args.speed,
        seed=args.seed,
        tick_hz=args.tick_hz,
        assets_dir=args.assets,
        audit=write_audit,
        live=source is not None,
        recorder=recorder,
        robots=getattr(args, "robots", False),
        robot_times=getattr(args, "robot_times", "file"),
        variants=getattr(args, "variants", None),
    )
    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    _warn_exposed(args.host, ctx is not None)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        origins=tuple(args.origin),
        ssl_context=ctx,
        static_dir=_viewer_dir(),
    )
    server = TwinServer(hub, tokens, config, source=sim, assets=AssetStore(args.assets))
    await server.start()
    settle_heap()
    scheme = "https" if ctx else "http"
    print(f"serving line '{sim.spec.name}' ({len(store)} entities) at {server.url}")
    if config.static_dir is not None:
        print(f"viewer: {scheme}://{args.host}:{server.port}/")
    print(f"audit log: {args.audit}")
    feed: asyncio.Task[None] | None = None
    if source is not None:
        from twin.live.mirror import LiveLine
        from twin.live.sources import run_source

        assert isinstance(sim, LiveLine)  # build_app(live=True) makes one
        if source.kind == "push":
            import time

            from twin.live.push import decode_pushed

            live_line = sim

            def ingest(principal: Any, items: list[Any]) -> None:
                live_line.ingest(decode_pushed(items, time.time(), who=principal.name))

            hub.ingest = ingest
        feed = asyncio.create_task(
            run_source(
                source,
                sim.ingest,
                line=sim.spec,
                graph=sim.graph,
                addresses=[t.address for t in sim.tags],
                twin_clock=sim.set_clock,
            )
        )
        print(f"mirroring from {source}" + (f"; record: {args.record}" if recorder else ""))
    if tokens_note is not None:
        print(f"admin token (shown once; pass --tokens FILE to use your own): {tokens_note}")
        if config.static_dir is not None:
            # the fragment never leaves the browser: the page reads the token and drops it
            print(f"open: {scheme}://{args.host}:{server.port}/#token={tokens_note}")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=args.duration)
    if feed is not None:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed
    await server.stop()
    if sim.robots is not None:
        sim.robots.close()
    audit.close()
    if recorder is not None:
        recorder.close()
    print(f"stopped after {server.ticks} ticks ({server.overruns} overran)")
    return 0


def _viewer_dir() -> Path | None:
    d = Path(__file__).resolve().parent.parent.parent / "viewer" / "static"
    return d if (d / "index.html").is_file() else None


def _warn_exposed(host: str, tls: bool) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning(
            "binding to %s: the twin is reachable from other machines%s",
            host,
            "" if tls else " without TLS (tokens travel in clear text)",
        )

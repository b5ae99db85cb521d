"""``twin scenario FILE``: run a training scenario (docs/scenarios.md).

As a server (the default), each session is a scenario instance served like ``twin serve``
(viewer at ``http://HOST:PORT/``, WebSocket at ``/ws``, tokens, audit log): trainees sign in as
operators and act through commands, the trainer (role trainer) controls time (``sim.pause``,
``sim.resume``, ``sim.speed``, ``sim.step``, ``sim.checkpoint``, ``sim.rewind``). ``--sessions N``
serves N independent instances of the scenario on N consecutive ports, one per trainee. When a
session's scenario ends (and again when the server stops) its report is written.

With ``--headless`` the scenario runs to its end as fast as it can, with the scripted actions of
``--actions``, and writes the report (``--report`` JSON, ``--html`` page). Deterministic for a
given scenario file (its seed) and actions file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streaming.auth import AuditRecord
    from streaming.hub import Hub
    from streaming.store import SceneStore
    from twin.scenario.line import ScenarioLine
    from twin.scenario.spec import Scenario


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "scenario",
        help="run a training scenario: served to trainees, or headless with scripted actions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="scenario file (YAML)")
    p.add_argument("--headless", action="store_true", help="run to the end now, no server")
    p.add_argument("--actions", metavar="FILE", help="with --headless: scripted trainee actions")
    p.add_argument("--report", metavar="JSON", help="write the score report here")
    p.add_argument("--html", metavar="HTML", help="write the report as an HTML page here")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="first port (default 8765; 0: free)")
    p.add_argument("--sessions", type=int, default=1, help="independent instances (default 1)")
    p.add_argument("--speed", type=float, default=1.0, help="initial speed, 0.1..100 (default 1)")
    p.add_argument("--paused", action="store_true", help="start paused (the trainer resumes)")
    p.add_argument("--tick-hz", type=float, default=30.0, help="frames a second, 10-60")
    p.add_argument(
        "--tokens", metavar="FILE", help="tokens file: a YAML list of {name, role, token}"
    )
    p.add_argument("--audit", default="out/audit.jsonl", help="audit log (session k: .k added)")
    p.add_argument("--assets", default="out/assets", help="content-addressed asset folder")
    p.add_argument("--robots", action="store_true", help="run the line's robot cells (pybullet)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scenes.errors import ConfigError
    from twin.scenario.spec import load_actions, load_scenario

    try:
        scenario = load_scenario(args.file)
        actions = load_actions(args.actions, scenario) if args.actions else []
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.actions and not args.headless:
        print("error: --actions goes with --headless", file=sys.stderr)
        return 2
    if args.headless:
        from twin.scenario.headless import run_headless

        report = run_headless(scenario, actions)
        write_report(report, args.report, args.html)
        sc = report["score"]
        print(f"scenario '{scenario.name}': score {sc['total']:.1f} / {sc['max']:.1f}")
        return 0
    if not 0.1 <= args.speed <= 100:
        print("error: --speed must be within 0.1..100", file=sys.stderr)
        return 2
    if not 1 <= args.sessions <= 64:
        print("error: --sessions must be within 1..64", file=sys.stderr)
        return 2
    if not 10 <= args.tick_hz <= 60:
        print("error: --tick-hz must be within 10..60", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args, scenario))


def write_report(report: dict[str, Any], json_path: str | None, html_path: str | None) -> None:
    from twin.scenario.report import render_html

    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if html_path:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        Path(html_path).write_text(render_html(report), encoding="utf-8")


def build_scenario_app(
    scenario: Scenario,
    *,
    speed: float = 1.0,
    tick_hz: float = 30.0,
    assets_dir: str | Path = "out/assets",
    audit: Callable[[AuditRecord], None] | None = None,
    robots: bool = False,
    on_end: Callable[[ScenarioLine], object] | None = None,
) -> tuple[SceneStore, Hub, ScenarioLine]:
    """One scenario session: its store, hub and line wired together as ``twin serve`` wires a
    simulated line (:func:`twin.commands.serve.build_app`)."""
    from scenes.assets import AssetStore, publish_scene
    from streaming.hub import CommandRegistry, Hub
    from streaming.store import SceneStore
    from twin.scenario.line import ScenarioLine

    graph = publish_scene(scenario.line, AssetStore(assets_dir))
    store = SceneStore()
    registry = CommandRegistry()
    hub = Hub(store, tick_hz=tick_hz, commands=registry, audit=audit)
    line = ScenarioLine(scenario, graph, speed=speed, on_alarm=hub.post_alarm, on_end=on_end)
    if robots:
        from twin.robots import RobotCells

        line.attach_robots(RobotCells(scenario.line, AssetStore(assets_dir)))
    line.populate(store)
    line.register_commands(registry, store)
    return store, hub, line


def _session_path(path: str | None, k: int, n: int) -> str | None:
    """``out/r.json`` for one session; ``out/r.2.json`` for session 2 of several."""
    if path is None or n == 1:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{k}{p.suffix}"))


async def _serve(args: argparse.Namespace, scenario: Scenario) -> int:
    from scenes.assets import AssetStore
    from streaming.auth import AuditLog, TokenBook
    from streaming.server import ServerConfig, TwinServer
    from twin.commands.serve import _viewer_dir, _warn_exposed

    if args.tokens:
        tokens = TokenBook.load(args.tokens)
        token = None
    else:
        tokens, token = TokenBook.generated()
    _warn_exposed(args.host, False)
    n = args.sessions
    servers: list[Any] = []
    lines: list[ScenarioLine] = []
    audits: list[Any] = []
    for k in range(1, n + 1):
        audit = AuditLog(_session_path(args.audit, k, n) or args.audit)
        rep, page = _session_path(args.report, k, n), _session_path(args.html, k, n)

        def ended(line: ScenarioLine, rep: str | None = rep, page: str | None = page) -> None:
            write_report(line.report(), rep, page)
            print(f"session {lines.index(line) + 1}: scenario ended; report written")

        _, hub, line = build_scenario_app(
            scenario,
            speed=args.speed,
            tick_hz=args.tick_hz,
            assets_dir=args.assets,
            audit=audit.write,
            robots=args.robots,
            on_end=ended if (rep or page) else None,
        )
        line.paused = args.paused
        port = 0 if args.port == 0 else args.port + k - 1
        config = ServerConfig(host=args.host, port=port, static_dir=_viewer_dir())
        server = TwinServer(hub, tokens, config, source=line, assets=AssetStore(args.assets))
        await server.start()
        servers.append(server)
        lines.append(line)
        audits.append(audit)
        print(f"session {k}: scenario '{scenario.name}' at {server.url}")
    if token is not None:
        print(f"admin token (shown once; pass --tokens FILE to use your own): {token}")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=args.duration)
    for k, (server, line, audit) in enumerate(zip(servers, lines, audits, strict=True), 1):
        await server.stop()
        write_report(
            line.report(), _session_path(args.report, k, n), _session_path(args.html, k, n)
        )
        if line.robots is not None:
            line.robots.close()
        audit.close()
    print("stopped")
    return 0

"""``twin view URL``: a desktop window (pyvista) that mirrors a running twin server live.

It joins ``URL`` (``ws://HOST:PORT/ws``) like any viewer and redraws the scene as machine
states change and parts move. The token comes from ``--token-file`` or the ``TWIN_TOKEN``
environment variable (never from the command line, where other users of the machine could read
it). ``--offscreen --frames N --screenshot PNG`` draws N frames without a display and saves the
last one (for tests and for headless machines).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "view",
        help="open a desktop window that mirrors a running twin (pyvista)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", metavar="URL", help="the server's WebSocket, e.g. ws://127.0.0.1:8765/ws")
    add_token_args(p)
    p.add_argument("--fps", type=float, default=20.0, help="redraws a second (default 20)")
    p.add_argument("--offscreen", action="store_true", help="draw without a window")
    p.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--screenshot", metavar="PNG", help="save the last frame to this file")
    p.add_argument("--size", default="1280x800", help="window size WxH (default 1280x800)")
    p.set_defaults(func=run)


def add_token_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the token (default: the TWIN_TOKEN environment variable)",
    )


def read_token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        return Path(args.token_file).read_text(encoding="utf-8").strip()
    return os.environ.get("TWIN_TOKEN") or None


def run(args: argparse.Namespace) -> int:
    from twin.commands.render import _quiet_vtk, parse_size
    from viewer.desktop import LiveScene, Mirror

    token = read_token(args)
    if not token:
        print("error: no token: pass --token-file FILE or set TWIN_TOKEN", file=sys.stderr)
        return 2
    if args.offscreen and args.frames is None:
        print("error: --offscreen needs --frames N", file=sys.stderr)
        return 2
    width, height = parse_size(args.size)
    import pyvista as pv

    if args.verbose == 0:
        _quiet_vtk()
    mirror = Mirror(args.url, token)
    plotter = pv.Plotter(
        off_screen=args.offscreen, window_size=[width, height], title=f"twin view {args.url}"
    )
    scene = LiveScene(plotter)
    try:
        scene.update(mirror.read(lambda r: r.copy()))
        if not args.offscreen:
            plotter.show(interactive_update=True, auto_close=False)
        n = 0
        period = 1.0 / max(args.fps, 1.0)
        while args.frames is None or n < args.frames:
            t0 = time.monotonic()
            scene.update(mirror.read(lambda r: r.copy()))
            if args.offscreen:
                plotter.render()
            else:
                plotter.update()
                if plotter.render_window is None:  # the window was closed
                    break
            n += 1
            time.sleep(max(0.0, period - (time.monotonic() - t0)))
        if args.screenshot:
            plotter.screenshot(args.screenshot)
            print(f"wrote {args.screenshot}")
    finally:
        plotter.close()
        mirror.close()
    return 0

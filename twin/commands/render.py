"""``twin render``: draw a line file's layout to a PNG, offscreen."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

SIZE_RE = re.compile(r"^(\d+)[xX](\d+)$")
MIN_SIDE, MAX_SIDE = 64, 8192


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` in pixels, each side from 64 to 8192."""
    m = SIZE_RE.match(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT in pixels, e.g. 1600x900, got {text!r}"
        )
    w, h = int(m.group(1)), int(m.group(2))
    for side in (w, h):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise argparse.ArgumentTypeError(
                f"each side must be {MIN_SIDE} to {MAX_SIDE} pixels, got {w}x{h}"
            )
    return w, h


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "render",
        help="render a line file's layout to a PNG (offscreen, no display needed)",
        description=(
            "Draw the layout of a line file with pyvista, offscreen: machines coloured by "
            "station type, conveyors, buffers, robots, labels and a legend."
        ),
    )
    p.add_argument("file", metavar="FILE", nargs="?", help="line file (YAML)")
    p.add_argument(
        "--live",
        metavar="URL",
        help="instead of a file's layout, draw the current state of a running twin "
        "(ws://HOST:PORT/ws; token from --token-file or TWIN_TOKEN)",
    )
    p.add_argument("--token-file", metavar="FILE", help="token for --live (default: TWIN_TOKEN)")
    p.add_argument(
        "-o",
        "--output",
        metavar="PNG",
        help="where to write the picture (default: FILE's name with .png, in this directory)",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default=(1600, 900),
        metavar="WxH",
        help="image size in pixels (default 1600x900)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scenes.lineparse import load_line
    from scenes.render import render_line

    if args.live:
        return _render_live(args)
    if not args.file:
        print("error: give a line FILE, or --live URL", file=sys.stderr)
        return 2
    spec = load_line(args.file)
    out = Path(args.output) if args.output else Path(Path(args.file).stem + ".png")
    if args.verbose == 0:
        _quiet_vtk()
    written = render_line(spec, out, size=args.size)
    w, h = args.size
    n_conv = sum(1 for b in spec.buffers if b.conveyor is not None)
    print(
        f"wrote {written} ({w}x{h}): line '{spec.name}', {len(spec.stations)} stations, "
        f"{len(spec.buffers)} buffers ({n_conv} conveyors)"
    )
    return 0


def _render_live(args: argparse.Namespace) -> int:
    import pyvista as pv

    from twin.commands.view import read_token
    from viewer.desktop import LiveScene, Mirror

    token = read_token(args)
    if not token:
        print("error: no token: pass --token-file FILE or set TWIN_TOKEN", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else Path("live.png")
    if args.verbose == 0:
        _quiet_vtk()
    mirror = Mirror(args.live, token)
    try:
        replica = mirror.read(lambda r: r.copy())
    finally:
        mirror.close()
    w, h = args.size
    plotter = pv.Plotter(off_screen=True, window_size=[w, h])
    try:
        LiveScene(plotter).update(replica)
        out.parent.mkdir(parents=True, exist_ok=True)
        plotter.screenshot(str(out))
    finally:
        plotter.close()
    n = sum(1 for e in replica.entities.values() if e.kind == "station")
    print(
        f"wrote {out} ({w}x{h}): the live state at t={replica.t:.1f} s, seq {replica.seq}, "
        f"{n} stations"
    )
    return 0


def _quiet_vtk() -> None:
    """Keep VTK's warnings (such as 'bad X server connection' on a headless machine, where
    it falls back to EGL) off the terminal; errors still show. ``-v`` shows them."""
    try:
        from vtkmodules.vtkCommonCore import vtkLogger
    except ImportError:  # render_line reports the missing package
        return
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_ERROR)

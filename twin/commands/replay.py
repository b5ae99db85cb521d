"""``twin replay LOG FILE``: drive a line's twin from a recorded log, as if live.

The record (``twin serve --source ... --record LOG``) holds every telemetry message the twin
received, accepted or rejected; replay hands them to a fresh twin at their original pace (or
``--speed`` times faster; 0 replays as fast as possible) and serves it like ``twin serve``.
"""

from __future__ import annotations

import argparse

from twin.commands import serve


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="serve a line's twin driven by a recorded log, as if live",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("log", metavar="LOG", help="a record written by twin serve --record")
    p.add_argument("file", metavar="FILE", help="the line file the record was made for")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="replay this many times faster than recorded; 0: at once (default 1)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--tick-hz", type=float, default=30.0, help="frames a second (default 30)")
    p.add_argument("--tokens", metavar="FILE", help="tokens file (default: generate one)")
    p.add_argument("--audit", default="out/audit.jsonl", help="audit log of commands")
    p.add_argument("--assets", default="out/assets", help="content-addressed asset folder")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.speed < 0:
        print("error: --speed must be >= 0")
        return 2
    ns = argparse.Namespace(
        file=args.file,
        host=args.host,
        port=args.port,
        tick_hz=args.tick_hz,
        tokens=args.tokens,
        speed=1.0,
        seed=1,
        audit=args.audit,
        assets=args.assets,
        origin=[],
        tls_cert=None,
        tls_key=None,
        duration=args.duration,
        source=f"replay:{args.log}?speed={args.speed:g}",
        record="none",
        verbose=args.verbose,
    )
    return serve.run(ns)

"""``twin gateway-sim FILE``: a plant to mirror. The line runs in the process core in real time
and its tags are published the way a real gateway would: over MQTT (``--mqtt URL``; JSON
payloads, or Sparkplug B for ``spBv1.0/...`` addresses with ``--sparkplug``) and/or as an OPC UA
server (``--opcua PORT``, for tags whose address is a node id), with configurable noise, dropouts
and reconnects. Mirror it with ``twin serve FILE --source mqtt://HOST:PORT`` (or ``opcua://...``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gateway-sim",
        help="run a simulated plant that publishes its tags like a gateway (MQTT, OPC UA)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="line file (YAML) with tags")
    p.add_argument("--mqtt", metavar="URL", help="publish to this broker (mqtt://HOST:PORT)")
    p.add_argument(
        "--sparkplug",
        action="store_true",
        help="publish spBv1.0/... addresses as Sparkplug B (births, aliases, seq)",
    )
    p.add_argument(
        "--push",
        metavar="URL",
        help="push over a twin's WebSocket (ws://HOST:PORT/ws; twin serve --source push) "
        "with the gateway token in --token-file or TWIN_TOKEN",
    )
    p.add_argument("--token-file", metavar="FILE", help="token for --push (default TWIN_TOKEN)")
    p.add_argument("--opcua", type=int, metavar="PORT", help="serve the tags over OPC UA")
    p.add_argument("--opcua-host", default="127.0.0.1", help="OPC UA bind address (127.0.0.1)")
    p.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="Gaussian noise on analog values, as a share of their range (default 0)",
    )
    p.add_argument(
        "--dropout", type=float, default=0.0, help="share of reports that are lost (default 0)"
    )
    p.add_argument(
        "--reconnect-every",
        type=float,
        default=None,
        metavar="S",
        help="drop and re-open the MQTT connections every S seconds",
    )
    p.add_argument("--seed", type=int, default=7, help="random seed of the plant (default 7)")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (an OPC UA server then keeps serving 1 s more, so that subscribers get the last values)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.mqtt and args.opcua is None and not args.push:
        print("error: give --mqtt URL, --opcua PORT and/or --push URL", file=sys.stderr)
        return 2
    if not 0 <= args.dropout < 1 or args.noise < 0:
        print("error: --dropout must be within [0, 1) and --noise >= 0", file=sys.stderr)
        return 2
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from scenes.graph import build_graph
    from scenes.lineparse import load_line
    from twin.live.gateway import Gateway
    from twin.live.plant import Plant
    from twin.live.sources import redact_url

    spec = load_line(args.file)
    plant = Plant(spec, build_graph(spec), seed=args.seed, noise=args.noise, dropout=args.dropout)
    push = None
    if args.push:
        from twin.commands.view import read_token

        token = read_token(args)
        if not token:
            print("error: --push needs a token: --token-file FILE or TWIN_TOKEN", file=sys.stderr)
            return 2
        push = (args.push, token)
    gw = Gateway(
        plant,
        push=push,
        mqtt=args.mqtt,
        sparkplug=args.sparkplug,
        opcua_port=args.opcua,
        opcua_host=args.opcua_host,
        reconnect_every_s=args.reconnect_every,
    )
    print(
        f"plant '{spec.name}': {len(plant.tags)} tags"
        + (
            f"; MQTT {redact_url(args.mqtt)} ({len(gw.json)} JSON, {len(gw.spb)} Sparkplug)"
            if args.mqtt
            else ""
        )
        + (f"; pushing to {args.push}" if args.push else "")
        + (f"; OPC UA port {args.opcua} ({len(gw.opcua)} nodes)" if args.opcua is not None else "")
    )
    sys.stdout.flush()
    task = asyncio.create_task(gw.run(args.duration))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    print(
        f"published {gw.published} messages ({gw.acked} acknowledged); "
        f"{plant.dropped} reports dropped on purpose"
    )
    return 0

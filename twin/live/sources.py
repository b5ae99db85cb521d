"""Where a live twin's telemetry comes from, named by one string (``twin serve --source``).

| source | what |
|---|---|
| ``embedded`` | a simulated plant (:class:`~twin.live.plant.Plant`) in this process, no broker |
| ``mqtt://HOST:PORT`` | gateways publishing JSON payloads on the tags' topics |
| ``mqtt://HOST:PORT?sparkplug=1`` | Sparkplug B gateways (``spBv1.0/#``) |
| ``opcua://HOST:PORT/PATH`` | an OPC UA server, by subscription (``opc.tcp://`` also accepted) |
| ``replay:LOG`` | a record written by an earlier run (``?speed=X``: X times as fast; 0: at once) |
| ``push`` | gateways push over the twin's own WebSocket (tokens of role ``gateway``) |

:func:`run_source` runs one until cancelled, handing everything to ``on_telemetry`` (the live
line's :meth:`~twin.live.mirror.LiveLine.ingest`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from scenes.errors import ConfigError
from scenes.graph import SceneGraph
from scenes.spec import LineSpec

from .telemetry import Telemetry


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: what logs, links and messages
    show (``mqtts://twin:***@broker:8883``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


OnTelemetry = Callable[[list[Telemetry]], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSpec:
    kind: str  # embedded, mqtt, opcua, replay
    url: str = ""
    sparkplug: bool = False
    speed: float = 1.0

    def __str__(self) -> str:
        if self.kind in ("embedded", "push"):
            return self.kind
        return f"{self.kind} {redact_url(self.url)}"  # never a password


def parse_source(text: str) -> SourceSpec:
    """``--source`` text to a :class:`SourceSpec`; raises ``ConfigError`` with the forms."""
    forms = "embedded, push, mqtt://HOST:PORT[?sparkplug=1], opcua://HOST:PORT/PATH, replay:LOG[?speed=X]"
    if text == "embedded":
        return SourceSpec(kind="embedded")
    if text == "push":
        return SourceSpec(kind="push")
    if text.startswith("replay:"):
        path, _, query = text[len("replay:") :].partition("?")
        q = parse_qs(query)
        try:
            speed = float(q.get("speed", ["1"])[0])
        except ValueError as exc:
            raise ConfigError(f"--source {text}: speed must be a number") from exc
        if not path or speed < 0:
            raise ConfigError(f"--source {text}: expected replay:LOG[?speed=X], X >= 0")
        return SourceSpec(kind="replay", url=path, speed=speed)
    parts = urlsplit(text)
    if parts.scheme in ("mqtt", "mqtts"):
        if not parts.hostname:
            raise ConfigError(f"--source {text}: no host; expected {forms}")
        q = parse_qs(parts.query)
        sparkplug = q.get("sparkplug", ["0"])[0].lower() in ("1", "true", "yes")
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return SourceSpec(kind="mqtt", url=url, sparkplug=sparkplug)
    if parts.scheme in ("opcua", "opc.tcp"):
        if not parts.hostname:
            raise ConfigError(f"--source {text}: no host; expected {forms}")
        url = urlunsplit(("opc.tcp", parts.netloc, parts.path or "/", parts.query, ""))
        return SourceSpec(kind="opcua", url=url)
    raise ConfigError(f"--source {text!r}: unknown; expected one of {forms}")


async def run_source(
    spec: SourceSpec,
    on_telemetry: OnTelemetry,
    *,
    line: LineSpec,
    graph: SceneGraph,
    addresses: Sequence[str],
    client_id: str = "twin-mirror",
    twin_clock: Callable[[Callable[[], float]], None] | None = None,
) -> None:
    """Run ``spec`` until cancelled. For a replay, ``twin_clock`` is handed the clock the twin
    must judge time by (the record's, not the wall's: timestamps, staleness)."""
    if spec.kind == "embedded":
        await run_embedded(line, graph, on_telemetry)
    elif spec.kind == "mqtt":
        from .mqtt import MqttSource

        await MqttSource(
            spec.url,
            addresses=list(addresses),
            sparkplug=spec.sparkplug,
            on_telemetry=on_telemetry,
            client_id=client_id,
        ).run()
    elif spec.kind == "opcua":
        from .opcua import OpcUaSource

        await OpcUaSource(spec.url, list(addresses), on_telemetry=on_telemetry).run()
    elif spec.kind == "push":
        await asyncio.Event().wait()  # the server's hub hands pushed telemetry to the twin
    elif spec.kind == "replay":
        from .replay import replay

        clock = ReplayClock(spec.speed)
        if twin_clock is not None:
            twin_clock(clock.now)

        def deliver(items: list[Telemetry]) -> None:
            clock.advance(max(i.received_ts for i in items))
            on_telemetry(items)

        await replay(spec.url, deliver, speed=spec.speed)
    else:  # pragma: no cover - parse_source makes only these
        raise ConfigError(f"unknown source kind {spec.kind}")


class ReplayClock:
    """The time of a replayed record: the arrival time of the last item delivered, running on
    at the replay's speed until the next one."""

    def __init__(self, speed: float) -> None:
        self.speed = speed if 0 < speed < float("inf") else 0.0
        self._t: float | None = None
        self._at = time.monotonic()

    def advance(self, t: float) -> None:
        self._t = t
        self._at = time.monotonic()

    def now(self) -> float:
        if self._t is None:
            return time.time()
        return self._t + (time.monotonic() - self._at) * self.speed


async def run_embedded(
    line: LineSpec,
    graph: SceneGraph,
    on_telemetry: OnTelemetry,
    *,
    period_s: float = 0.1,
    noise: float = 0.01,
    dropout: float = 0.0,
    seed: int = 7,
) -> None:
    """A simulated plant in this process, polled every ``period_s``: the demo's path when no
    broker is named."""
    from .plant import Plant

    plant = Plant(line, graph, seed=seed, noise=noise, dropout=dropout, source="embedded")
    while True:
        items = plant.poll(time.time())
        if items:
            on_telemetry(list(items))
        await asyncio.sleep(period_s)

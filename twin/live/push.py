"""Telemetry pushed by gateways over the twin's own WebSocket (``twin serve --source push``).

A gateway connects to ``ws://HOST:PORT/ws`` with a token of role ``gateway`` and sends
``telemetry`` messages (``docs/protocol.md``): ``{"type": "telemetry", "samples": [{"address":
..., "value": ..., "ts": ..., "quality": ...}, ...]}``. It need not ``join``. Each item follows the
JSON payload convention of MQTT (``docs/telemetry.md``): ``ts`` in Unix seconds (milliseconds if
over 1e11), ``quality`` good, uncertain or bad. :func:`decode_pushed` turns items into telemetry;
:class:`WsPusher` is the gateway side (``twin gateway-sim --push URL``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .telemetry import Quality, Reason, Rejected, Sample, Telemetry

_QUALITY = {q.value: q for q in Quality}
SOURCE = "push"


def decode_pushed(
    items: Iterable[Mapping[str, Any]], received_ts: float, *, who: str = ""
) -> list[Telemetry]:
    """Pushed items as telemetry; a malformed item becomes a :class:`Rejected`. Never raises."""
    source = f"{SOURCE}:{who}" if who else SOURCE
    return [_decode_item(item, received_ts, source) for item in items]


def _decode_item(item: Mapping[str, Any], received_ts: float, source: str) -> Telemetry:
    address = item.get("address")

    def reject(reason: Reason, detail: str) -> Rejected:
        return Rejected(
            reason=reason,
            detail=detail,
            received_ts=received_ts,
            source=source,
            address=address if isinstance(address, str) else "",
        )

    if not isinstance(address, str) or not address:
        return reject(Reason.MALFORMED, "no string 'address'")
    if "value" not in item:
        return reject(Reason.MALFORMED, "no 'value'")
    value = item["value"]
    if isinstance(value, (dict, list, bytes)):
        return reject(Reason.WRONG_TYPE, f"value is a {type(value).__name__}")
    ts = item.get("ts")
    source_ts: float | None = None
    if ts is not None:
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
            return reject(Reason.MALFORMED, f"bad ts {ts!r:.40}")
        source_ts = ts / 1000.0 if ts > 1e11 else float(ts)
    q = item.get("quality", "good")
    quality = _QUALITY.get(q) if isinstance(q, str) else None
    if quality is None:
        return reject(Reason.MALFORMED, f"bad quality {q!r:.40}")
    return Sample(
        address=address,
        value=value,
        source_ts=source_ts,
        received_ts=received_ts,
        quality=quality,
        source=source,
    )


class WsPusher:
    """A gateway pushing samples to a twin over its WebSocket, reconnecting by itself."""

    def __init__(self, url: str, token: str, *, batch: int = 500) -> None:
        self.url = url
        self._token = token
        self.batch = batch
        self.sent = 0
        self._ws: Any = None

    async def _connect(self) -> Any:
        from websockets.asyncio.client import connect

        from streaming.protocol import SUBPROTOCOL

        return await connect(
            self.url,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {self._token}"},
            compression=None,
            open_timeout=10,
        )

    async def push(self, samples: Sequence[Sample]) -> bool:
        """Send ``samples``; True once written (a lost connection is re-opened next time)."""
        from streaming.protocol import encode

        if not samples:
            return True
        try:
            if self._ws is None:
                self._ws = await self._connect()
                await self._ws.recv()  # hello
            for i in range(0, len(samples), self.batch):
                part = samples[i : i + self.batch]
                await self._ws.send(
                    encode(
                        {
                            "type": "telemetry",
                            "samples": [
                                {
                                    "address": s.address,
                                    "value": s.value,
                                    "ts": s.source_ts,
                                    "quality": s.quality.value,
                                }
                                for s in part
                            ],
                        }
                    )
                )
            self.sent += len(samples)
            return True
        except Exception:  # a lost or refused connection: reported, re-opened next time
            if self._ws is not None:
                with contextlib.suppress(Exception):
                    await self._ws.close()
            self._ws = None
            return False

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

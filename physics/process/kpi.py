"""KPIs from final engine states: throughput, WIP, lead time, OEE, time fractions, bottleneck.

Definitions are those of ``docs/process-semantics.md``. Everything here is host-side numpy on the
batched final state (one device-to-host transfer, in :func:`to_host`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physics.process.model import BLOCKED, BUSY, DOWN, IDLE, LT_EDGES, Model

F = NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunKPIs:
    """KPIs of a batch of runs; every array has the batch axis V first.

    Per-station arrays are (V, S) in the model's station order.
    """

    station_ids: tuple[str, ...]
    window_s: F  # (V,)
    throughput_per_hour: F  # (V,)
    wip: F  # (V,)
    lead_time_mean: F  # (V,)
    lead_time_p95: F  # (V,)
    delivered: NDArray[np.int64]  # (V,)
    busy: F  # (V, S)
    blocked: F
    starved: F
    down: F
    produced: NDArray[np.int64]  # (V, S)
    scrapped: NDArray[np.int64]
    oee: F  # (V, S) per station
    availability: F
    performance: F
    quality: F
    bottleneck: NDArray[np.int64]  # (V,) station index
    completions: NDArray[np.int64]  # (V,) whole run
    events: NDArray[np.int64]  # (V,)
    lost_arrivals: NDArray[np.int64]  # (V,)

    @property
    def n(self) -> int:
        return int(self.throughput_per_hour.shape[0])

    def line_oee(self) -> dict[str, F]:
        """OEE factors of each run's bottleneck station, (V,) each."""
        v = np.arange(self.n)
        b = self.bottleneck
        return {
            "oee": self.oee[v, b],
            "availability": self.availability[v, b],
            "performance": self.performance[v, b],
            "quality": self.quality[v, b],
        }

    def take(self, index: NDArray[np.int64] | slice) -> RunKPIs:
        kw: dict[str, Any] = {}
        for f in fields(self):
            val = getattr(self, f.name)
            kw[f.name] = val if f.name == "station_ids" else val[index]
        return RunKPIs(**kw)


def percentile_from_hist(hist: NDArray[np.int64], q: float) -> F:
    """The q-quantile (0..1) of each row of a lead-time histogram on ``LT_EDGES`` (log-linear)."""
    hist = np.atleast_2d(hist).astype(np.float64)
    total = hist.sum(axis=1)
    cum = np.cumsum(hist, axis=1)
    target = q * total
    out = np.full(hist.shape[0], np.nan)
    for r in range(hist.shape[0]):
        if total[r] <= 0:
            continue
        k = int(np.searchsorted(cum[r], target[r], side="left"))
        below = cum[r, k - 1] if k > 0 else 0.0
        frac = (target[r] - below) / hist[r, k] if hist[r, k] > 0 else 0.0
        lo, hi = np.log(LT_EDGES[k]), np.log(LT_EDGES[k + 1])
        out[r] = float(np.exp(lo + frac * (hi - lo)))
    return out


def assemble(
    *,
    station_ids: tuple[str, ...],
    window: F,
    fractions: dict[str, F],
    servers: F,
    pt_mean: F,
    delivered: NDArray[np.int64],
    wip_int: F,
    lt_sum: F,
    lt_hist: NDArray[np.int64],
    produced: NDArray[np.int64],
    scrapped: NDArray[np.int64],
    completions: NDArray[np.int64],
    events: NDArray[np.int64],
    lost: NDArray[np.int64],
) -> RunKPIs:
    """The KPIs from a run's window totals: the one place their definitions live.

    ``fractions`` holds busy, blocked, starved and down, each (V, S); ``servers`` and ``pt_mean``
    are (V, S); ``window`` is (V,) seconds.
    """
    busy, blocked, starved, down = (fractions[k] for k in ("busy", "blocked", "starved", "down"))
    avail = 1.0 - down
    made = produced + scrapped
    with np.errstate(invalid="ignore", divide="ignore"):
        perf = np.where(avail > 0, pt_mean * made / (servers * window[:, None] * avail), 0.0)
        qual = np.where(made > 0, produced / np.maximum(made, 1), 1.0)
        lt_mean = np.where(delivered > 0, lt_sum / np.maximum(delivered, 1), np.nan)
    n_st = len(station_ids)
    # active share: busy or down; ties go to the first station in the file
    bottleneck = np.argmax(busy + down - 1e-12 * np.arange(n_st), axis=1)
    return RunKPIs(
        station_ids=station_ids,
        window_s=window,
        throughput_per_hour=delivered / window * 3600.0,
        wip=wip_int / window,
        lead_time_mean=lt_mean,
        lead_time_p95=percentile_from_hist(lt_hist, 0.95),
        delivered=delivered,
        busy=busy,
        blocked=blocked,
        starved=starved,
        down=down,
        produced=produced,
        scrapped=scrapped,
        oee=avail * perf * qual,
        availability=avail,
        performance=perf,
        quality=qual,
        bottleneck=bottleneck.astype(np.int64),
        completions=completions,
        events=events,
        lost_arrivals=lost,
    )


def compute(model: Model, state: Any, params: Any) -> RunKPIs:
    """KPIs of a batched final state of the general engine (arrays with a leading batch axis)."""

    def get(a: Any) -> NDArray[Any]:
        return np.asarray(a)  # one host transfer per field

    horizon, warmup = get(params.horizon), get(params.warmup)
    v = get(state.now).shape[0]
    window = np.broadcast_to(horizon - warmup, (v,)).astype(np.float64)
    servers = np.broadcast_to(get(params.servers), (v, model.n_stations)).astype(np.float64)
    acc = get(state.acc)  # (V, N, 4)
    per = np.zeros((v, model.n_stations, 4))
    for slot, station in enumerate(model.slot_station):
        per[:, station] += acc[:, slot]
    frac = per / (servers * window[:, None])[:, :, None]
    names = {"busy": BUSY, "blocked": BLOCKED, "starved": IDLE, "down": DOWN}
    return assemble(
        station_ids=model.station_ids,
        window=window,
        fractions={k: frac[:, :, i] for k, i in names.items()},
        servers=servers,
        pt_mean=np.broadcast_to(get(params.pt_mean), (v, model.n_stations)),
        delivered=get(state.delivered).astype(np.int64),
        wip_int=get(state.wip_int),
        lt_sum=get(state.lt_sum),
        lt_hist=get(state.lt_hist),
        produced=get(state.produced).astype(np.int64),
        scrapped=get(state.scrapped).astype(np.int64),
        completions=get(state.completions).astype(np.int64),
        events=get(state.n_events).astype(np.int64),
        lost=get(state.lost).astype(np.int64),
    )

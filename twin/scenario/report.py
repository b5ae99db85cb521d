"""The score report of a scenario run: :func:`score` (pure, on the record), :func:`build_report`
(the JSON object) and :func:`render_html` (one self-contained page: plots as base64 PNGs, no
external resource). The scheme is documented in ``docs/scenarios.md``.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .spec import DISRUPTIONS, EventKind, Scenario

if TYPE_CHECKING:
    from .line import ScenarioLine

#: Colours of station states in the plots (as in the viewer).
STATE_COLORS = {
    "busy": "#2e9e44",
    "blocked": "#e6a700",
    "starved": "#9aa5b1",
    "down": "#d64541",
    "stale": "#6c5ce7",
}


def rates(samples: Sequence[Mapping[str, Any]], window_s: float, sample_s: float) -> list[float]:
    """Deliveries per hour over the ``window_s`` before each sample (nan where the run is
    younger than the window)."""
    n = max(1, round(window_s / sample_s))
    d = [int(s["delivered"]) for s in samples]
    return [(d[i] - d[i - n]) * 3600.0 / window_s if i >= n else math.nan for i in range(len(d))]


def score(
    scenario: Scenario,
    samples: Sequence[Mapping[str, Any]],
    alarms: Sequence[Mapping[str, Any]],
    violations: Sequence[Mapping[str, Any]],
    rush: Mapping[int, int],
    now: float,
) -> dict[str, Any]:
    """Points per criterion and in total for a run recorded up to scenario time ``now``.

    ``rush`` maps each started rush order (event index) to the parts delivered for it (by its due
    time, or so far)."""
    sc = scenario.scoring
    crit: list[dict[str, Any]] = []
    t = [float(s["t"]) for s in samples]
    w = sc.recovery_window_s
    rate = rates(samples, w, scenario.sample_s)
    disruptions = [
        (k, ev) for k, ev in enumerate(scenario.events) if ev.kind in DISRUPTIONS and ev.at_s <= now
    ]
    if sc.recovery_points > 0 and disruptions:
        share = sc.recovery_points / len(disruptions)
        for k, ev in disruptions:
            base = sc.baseline_per_hour
            if base is None:
                before = [i for i, ti in enumerate(t) if ti <= ev.at_s]
                j = before[-1] if before else 0
                if not math.isnan(rate[j]):
                    base = rate[j]
                elif j > 0 and t[j] > 0:
                    base = (samples[j]["delivered"] - samples[0]["delivered"]) * 3600.0 / t[j]
            target = None if base is None else base * sc.recovery_percent / 100.0
            rec = None
            if target is not None:
                for i, ti in enumerate(t):
                    if ti >= ev.at_s + w and rate[i] >= target - 1e-9:
                        rec = ti
                        break
            ok = rec is not None and rec - ev.at_s <= sc.recovery_within_s + 1e-9
            crit.append(
                {
                    "criterion": "recovery",
                    "event": k,
                    "text": f"throughput back to {sc.recovery_percent:g}% within "
                    f"{sc.recovery_within_s:g} s of '{ev.describe()}' (at {ev.at_s:g} s)",
                    "baseline_per_hour": base,
                    "recovered_after_s": None if rec is None else rec - ev.at_s,
                    "points": share if ok else 0.0,
                    "max": share,
                }
            )
    counted = [a for a in alarms if a["raised_t"] <= now]
    if sc.ack_points > 0 and counted:
        in_time = [
            a
            for a in counted
            if a["acked_t"] is not None and a["acked_t"] - a["raised_t"] <= sc.ack_within_s + 1e-9
        ]
        crit.append(
            {
                "criterion": "acknowledge",
                "text": f"alarms acknowledged within {sc.ack_within_s:g} s",
                "alarms": len(counted),
                "in_time": len(in_time),
                "points": sc.ack_points * len(in_time) / len(counted),
                "max": sc.ack_points,
            }
        )
    if sc.safety_points > 0:
        crit.append(
            {
                "criterion": "safety",
                "text": "no safety violation",
                "violations": len(violations),
                "points": 0.0 if violations else sc.safety_points,
                "max": sc.safety_points,
            }
        )
    orders = [(k, ev) for k, ev in enumerate(scenario.events) if ev.kind is EventKind.RUSH_ORDER]
    orders = [(k, ev) for k, ev in orders if ev.at_s <= now]
    if sc.rush_points > 0 and orders:
        share = sc.rush_points / len(orders)
        for k, ev in orders:
            got = rush.get(k, 0)
            ok = got >= (ev.parts or 0)
            crit.append(
                {
                    "criterion": "rush_order",
                    "event": k,
                    "text": f"{ev.parts} parts within {ev.within_s:g} s of {ev.at_s:g} s",
                    "delivered": got,
                    "points": share if ok else 0.0,
                    "max": share,
                }
            )
    total = sum(c["points"] for c in crit)
    top = sum(c["max"] for c in crit)
    return {
        "total": round(total, 6),
        "max": round(top, 6),
        "percent": round(100.0 * total / top, 2) if top > 0 else None,
        "criteria": crit,
    }


def build_report(line: ScenarioLine) -> dict[str, Any]:
    """The JSON report of ``line``'s run so far (``docs/scenarios.md``)."""
    sc, pr = line.scenario, line.progress
    s = line.state
    span = max(line.t, 0.0)
    delivered = int(np.asarray(s.delivered)[0])
    frac = line._fractions()
    stations = {
        sid: {
            "busy": float(frac[i, 1]),
            "blocked": float(frac[i, 2]),
            "starved": float(frac[i, 0]),
            "down": float(frac[i, 3]),
            "produced": int(np.asarray(s.produced)[0, i]),
            "scrapped": int(np.asarray(s.scrapped)[0, i]),
        }
        for i, sid in enumerate(line.model.station_ids)
    }
    rush = dict(pr.rush_done)
    for k, base in pr.rush_base.items():
        rush.setdefault(k, delivered - base)
    alarms = line.alarms()
    return {
        "scenario": sc.name,
        "description": sc.description,
        "file": sc.file,
        "line": sc.line.name,
        "seed": sc.seed,
        "duration_s": sc.duration_s,
        "warmup_s": sc.start.warmup_s,
        "sample_s": sc.sample_s,
        "t": round(line.t, 9),
        "finished": pr.finished,
        "score": score(sc, pr.samples, alarms, pr.violations, rush, line.t),
        "kpis": {
            "delivered": delivered,
            "throughput_per_hour": delivered * 3600.0 / span if span > 0 else 0.0,
            "wip_mean": float(np.asarray(s.wip_int)[0]) / span if span > 0 else 0.0,
            "stations": stations,
        },
        "events": [
            {"index": k, "type": ev.kind.value, "at": ev.at_s, "text": ev.describe()}
            for k, ev in enumerate(sc.events)
        ],
        "log": pr.log,
        "actions": pr.actions,
        "alarms": alarms,
        "violations": pr.violations,
        "timeline": {
            "station_ids": list(line.model.station_ids),
            "buffer_ids": list(line.model.buffer_ids),
            "samples": pr.samples,
        },
    }


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained HTML page: the score, plots of what happened and when, the tables."""
    e = html.escape
    sc = report["score"]
    rows = "".join(
        f"<tr><td>{e(c['criterion'])}</td><td>{e(c['text'])}</td>"
        f"<td class=n>{c['points']:.1f}</td><td class=n>{c['max']:.1f}</td></tr>"
        for c in sc["criteria"]
    )
    acts = "".join(
        f"<tr><td class=n>{a['t']:.0f}</td><td>{e(a['who'])}</td><td>{e(a['action'])}</td>"
        f"<td>{e(a['target'])}</td><td>{'ok' if a['ok'] else e(a['reason'] or 'refused')}</td></tr>"
        for a in report["actions"]
    )
    evs = "".join(
        f"<tr><td class=n>{x['t']:.0f}</td><td>{e(x['what'])}</td><td>{e(x.get('text', ''))}</td></tr>"
        for x in report["log"]
    )
    alarms = "".join(
        f"<tr><td class=n>{a['raised_t']:.0f}</td><td>{e(a['entity'])}</td><td>{e(a['text'])}</td>"
        f"<td>{_acked(a)}</td></tr>"
        for a in report["alarms"]
    )
    k = report["kpis"]
    pct = "" if sc["percent"] is None else f" ({sc['percent']:.0f}%)"
    img = _plot(report)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Scenario report: {e(report["scenario"])}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.total {{ font-size: 1.6em; font-weight: 600; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Scenario: {e(report["scenario"])}</h1>
<p>{e(report["description"])}</p>
<p>line <b>{e(report["line"])}</b>, seed {report["seed"]}, {report["t"]:.0f} of
{report["duration_s"]:.0f} s{"" if report["finished"] else " (not finished)"}</p>
<p class=total>Score: {sc["total"]:.1f} / {sc["max"]:.1f}{pct}</p>
<table><tr><th>criterion</th><th></th><th>points</th><th>of</th></tr>{rows}</table>
<p>delivered {k["delivered"]}, {k["throughput_per_hour"]:.1f} per hour, mean WIP
{k["wip_mean"]:.1f}</p>
<img alt="throughput, WIP and station states over time" src="data:image/png;base64,{img}">
<h2>Events</h2><table><tr><th>t (s)</th><th></th><th></th></tr>{evs}</table>
<h2>Trainee actions</h2>
<table><tr><th>t (s)</th><th>who</th><th>action</th><th>target</th><th>result</th></tr>{acts}</table>
<h2>Alarms</h2>
<table><tr><th>raised (s)</th><th>entity</th><th>text</th><th>acknowledged</th></tr>{alarms}</table>
</body></html>
"""


def _acked(a: Mapping[str, Any]) -> str:
    if a["acked_t"] is None:
        return ""
    return f"{a['acked_t']:.0f} s by {html.escape(str(a['acked_by']))}"


def _plot(report: Mapping[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    tl = report["timeline"]
    samples = tl["samples"]
    t = np.array([s["t"] for s in samples], dtype=float)
    w = max(report["sample_s"] * 6, 60.0)
    tp = np.array(rates(samples, w, report["sample_s"]))
    wip = np.array([s["wip"] for s in samples], dtype=float)
    ids = tl["station_ids"]
    fig, (a1, a2, a3) = plt.subplots(
        3,
        1,
        figsize=(11, 3 + 0.35 * len(ids) + 4),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 2, max(1.5, 0.35 * len(ids))]},
    )
    a1.plot(t, tp, color="#1f5fa8")
    a1.set_ylabel(f"throughput / h\n(last {w:.0f} s)")
    a2.plot(t, wip, color="#555")
    a2.set_ylabel("WIP")
    dt = report["sample_s"]
    for row in range(len(ids)):
        for state, color in STATE_COLORS.items():
            spans = [(s["t"], dt) for s in samples if s["states"][row] == state]
            if spans:
                a3.broken_barh(spans, (row - 0.4, 0.8), color=color, linewidth=0)
    a3.set_yticks(range(len(ids)), ids)
    a3.set_ylim(len(ids) - 0.5, -0.5)
    a3.set_xlabel("scenario time (s)")
    for x in report["log"]:
        if x["what"] == "start":
            for ax in (a1, a2, a3):
                ax.axvline(x["t"], color="#d64541", lw=1, ls="--")
            a1.annotate(
                x.get("text", ""),
                (x["t"], 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color="#d64541",
            )
    for a in report["actions"]:
        for ax in (a1, a2, a3):
            ax.axvline(a["t"], color="#2e7d32" if a["ok"] else "#999", lw=1, ls=":")
        a2.annotate(
            f"{a['action']} {a['target']}",
            (a["t"], 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="left",
            fontsize=7,
            color="#2e7d32",
        )
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in STATE_COLORS.values()]
    a3.legend(handles, list(STATE_COLORS), loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")

"""The SimPy reference model (``benchmarks/simpy_line.py``) against results nobody here derived.

Exact tests use deterministic lines whose behaviour follows from the rules by hand (the traces are
spelled out next to each test). Statistical tests compare replication means with closed forms of
queueing theory (Buzacott's two-station line, M/M/1, M/D/1, M/M/2, renewal arguments for
failures and scrap) or a small Markov chain solved here with numpy.

Statistical tolerance, once for the whole file: every interval check uses a Student-t interval at
``LEVEL = 0.999`` over ``>= 10`` independent replications after a warm-up. The file makes about
thirty such checks; at 95 % a correct model would miss one of them in most choices of seeds (a
re-seed or a change in how the model consumes random numbers would then "break" the tests), at
99.9 % the family-wise false-alarm rate is about 3 %. To keep the tests able to fail, every check
also bounds the interval's half-width (``rel``, a few per cent of the exact value), well below the
effect of the semantic errors they guard against (a buffer slot too many or too few changes the
Buzacott throughput by 2-12 %; counting queue time wrongly changes a sojourn time by 50 %).
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import numpy as np
import pytest
from numpy.random import PCG64, Generator

from benchmarks.simpy_line import draw, replicate, simulate, summarize
from scenes.lineparse import parse_line
from scenes.spec import DistKind, Distribution, LineSpec

LEVEL = 0.999


def line(text: str) -> LineSpec:
    return parse_line(textwrap.dedent(text))


def exp(mean: float) -> str:
    return f"{{dist: exponential, mean: {mean!r}}}"


def check_ci(results: list[dict[str, Any]], key: str, exact: float, rel: float) -> None:
    """``exact`` lies in the ``LEVEL`` interval, and that interval is narrower than ``rel``."""
    s = summarize(results, key, LEVEL)
    assert s.halfwidth <= rel * abs(exact), (
        f"{key}: interval too wide to mean anything: ±{s.halfwidth:.4g} around {s.mean:.6g}"
    )
    assert exact in s, f"{key}: {exact:.6g} outside [{s.low:.6g}, {s.high:.6g}]"


# -- deterministic lines: exact ----------------------------------------------------------------

SERIAL = line(
    """
    line: serial
    stations:
      - {id: A, process_time: 30}
      - {id: B, process_time: 45}
      - {id: C, process_time: 20}
    buffers:
      - {id: ab, from: A, to: B, capacity: 0}
      - {id: bc, from: B, to: C, capacity: 2}
    """
)


@pytest.mark.parametrize("horizon", [94, 95, 96, 139, 140, 141, 184, 185, 1000, 3695, 36000])
def test_deterministic_serial_delivered_by_horizon(horizon: float) -> None:
    # The first part leaves A at 30, B at 75, C at 95; B (the slowest) never starves after that,
    # so deliveries come at 95 + 45 k. A delivery at exactly H counts (the window is (0, H]).
    result = simulate(SERIAL, hours=horizon / 3600)
    expected = math.floor((horizon - 95) / 45) + 1 if horizon >= 95 else 0
    assert result["delivered"] == expected


def test_deterministic_serial_long_run() -> None:
    # Window of 10 h = 800 cycles of 45 s: every periodic quantity is exact.
    r = simulate(SERIAL, hours=11, warmup_hours=1)
    assert r["throughput_per_hour"] == pytest.approx(3600 / 45, rel=1e-12)
    assert r["delivered"] == 800
    st = r["stations"]
    assert st["B"]["busy"] == pytest.approx(1.0, abs=1e-12)
    # A works 30 s and waits 15 s blocked for B (capacity 0); C works 20 s of every 45.
    assert st["A"]["busy"] == pytest.approx(30 / 45, abs=1e-12)
    assert st["A"]["blocked"] == pytest.approx(15 / 45, abs=1e-12)
    assert st["C"]["busy"] == pytest.approx(20 / 45, abs=1e-12)
    assert st["C"]["starved"] == pytest.approx(25 / 45, abs=1e-12)
    # Every part: 30 at A, 15 blocked, 45 at B, 20 at C.
    assert r["lead_time_mean"] == pytest.approx(110.0, abs=1e-9)
    assert r["lead_time_p95"] == pytest.approx(110.0, abs=1e-9)
    # Little's law holds exactly here: one part in A, one in B, one in C 20/45 of the time.
    assert r["wip"] == pytest.approx(2 + 20 / 45, abs=1e-9)
    assert r["wip"] == pytest.approx(r["throughput_per_hour"] / 3600 * r["lead_time_mean"])
    assert r["bottleneck"] == "B"
    assert r["oee"] == pytest.approx(
        {"oee": 1.0, "availability": 1.0, "performance": 1.0, "quality": 1.0}
    )
    assert r["completions"] == r["events"]  # no failures, arrivals or conveyors: only completions


def test_parallel_servers_share_the_load() -> None:
    # A (10 s) hands over directly (capacity 0) to B's two servers (15 s each): B0 takes parts at
    # 10, 30, 50 ... and B1 at 20, 40 ...; A is never blocked and each B server is busy 15 of 20 s.
    spec = line(
        """
        line: par
        stations:
          - {id: A, process_time: 10}
          - {id: B, process_time: 15, servers: 2}
          - {id: P, process_time: 30, servers: 3}
        buffers:
          - {id: ab, from: A, to: B, capacity: 0}
        """
    )
    r = simulate(spec, hours=2, warmup_hours=1)
    st = r["stations"]
    assert st["A"]["blocked"] == 0.0
    assert st["B"]["busy"] == pytest.approx(0.75, abs=1e-12)
    assert st["B"]["starved"] == pytest.approx(0.25, abs=1e-12)
    assert st["B"]["produced"] == 360
    # P is an independent saturated station with three 30 s servers: 3 * 120 parts per hour.
    assert st["P"]["produced"] == 360
    assert st["P"]["busy"] == pytest.approx(1.0, abs=1e-12)
    assert r["throughput_per_hour"] == pytest.approx(720.0)


def test_round_robin_alternates_exactly() -> None:
    # S finishes a part every 10 s; X1, X2, X3 take turns and each needs 1 s.
    spec = line(
        """
        line: rr
        stations:
          - {id: S, process_time: 10}
          - {id: X1, process_time: 1}
          - {id: X2, process_time: 1}
          - {id: X3, process_time: 1}
        buffers:
          - {id: b1, from: S, to: X1, capacity: 1}
          - {id: b2, from: S, to: X2, capacity: 1}
          - {id: b3, from: S, to: X3, capacity: 1}
        """
    )
    for k in range(1, 14):  # parts 1..k are delivered by 10 k + 5; part j went to X((j-1) % 3)
        r = simulate(spec, hours=(10 * k + 5) / 3600)
        got = [r["stations"][x]["produced"] for x in ("X1", "X2", "X3")]
        assert got == [len(range(i, k, 3)) for i in range(3)], k


def test_round_robin_skips_a_full_buffer_and_moves_past_it() -> None:
    # S (1 s) feeds a slow X (10 s) and a fast Y (1 s), one slot each. X takes part 1 at t = 1
    # and is busy from then on, finishing at 11, 21, ...; while bx is full, round robin passes
    # it and every part goes to Y, so S is never blocked.
    spec = line(
        """
        line: rr-skip
        stations:
          - {id: S, process_time: 1}
          - {id: X, process_time: 10}
          - {id: Y, process_time: 1}
        buffers:
          - {id: bx, from: S, to: X, capacity: 1}
          - {id: by, from: S, to: Y, capacity: 1}
        """
    )
    for horizon in (10, 11, 21, 100, 1001):
        r = simulate(spec, hours=horizon / 3600)
        st = r["stations"]
        assert st["X"]["produced"] == (horizon - 1) // 10
        assert st["S"]["produced"] == horizon
        assert st["S"]["blocked"] == 0.0


@pytest.mark.parametrize(
    ("policy", "to_x", "to_y"), [("shortest_queue", 3599, 0), ("round_robin", 1800, 1799)]
)
def test_shortest_queue_prefers_the_first_of_equal_queues(
    policy: str, to_x: int, to_y: int
) -> None:
    # X and Y take every part at once, so both queues are empty whenever S finishes: shortest
    # queue breaks the tie towards the first buffer every time, round robin alternates. S
    # finishes part j at j s, delivered at j + 0.5: parts 1..3599 are out within the hour.
    spec = line(
        f"""
        line: sq
        stations:
          - {{id: S, process_time: 1, routing: {policy}}}
          - {{id: X, process_time: 0.5}}
          - {{id: Y, process_time: 0.5}}
        buffers:
          - {{id: bx, from: S, to: X, capacity: 2}}
          - {{id: by, from: S, to: Y, capacity: 2}}
        """
    )
    st = simulate(spec, hours=1)["stations"]
    assert (st["X"]["produced"], st["Y"]["produced"]) == (to_x, to_y)


def test_probability_routing_waits_for_the_drawn_buffer() -> None:
    # All weight on bx: parts wait for X (3 s) even though Y is idle.
    spec = line(
        """
        line: prob-wait
        stations:
          - {id: S, process_time: 1, routing: {policy: probability, weights: {bx: 1, by: 0}}}
          - {id: X, process_time: 3}
          - {id: Y, process_time: 1}
        buffers:
          - {id: bx, from: S, to: X, capacity: 1}
          - {id: by, from: S, to: Y, capacity: 1}
        """
    )
    r = simulate(spec, hours=2, warmup_hours=1)
    assert r["stations"]["Y"]["produced"] == 0
    assert r["throughput_per_hour"] == pytest.approx(1200.0)
    assert r["stations"]["S"]["blocked"] == pytest.approx(2 / 3, abs=1e-12)


def test_merge_takes_the_part_ready_longest() -> None:
    # A and B (2 s) hand over directly to M (3 s). At t = 2 both are blocked: the tie goes to A,
    # the first input, so A restarts at 2 and finishes again at 4. At t = 5 M chooses between
    # B (blocked since 2) and A (since 4) and takes B; then A (since 4) before B (since 7), ...
    spec = line(
        """
        line: merge
        stations:
          - {id: A, process_time: 2}
          - {id: B, process_time: 2}
          - {id: M, process_time: 3}
        buffers:
          - {id: am, from: A, to: M, capacity: 0}
          - {id: bm, from: B, to: M, capacity: 0}
        """
    )
    st = simulate(spec, hours=4.5 / 3600)["stations"]
    assert (st["A"]["produced"], st["B"]["produced"]) == (2, 1)
    r = simulate(spec, hours=100 / 3600)
    st = r["stations"]
    assert st["M"]["produced"] == (100 - 2) // 3  # M busy from t = 2 on
    # Taking turns: A supplies parts 1, 3, 5, ... and B parts 2, 4, ... (each also holds one).
    assert (st["A"]["produced"], st["B"]["produced"]) == (18, 17)


CONVEYORS = line(
    """
    line: conveyors
    stations:
      - {id: A, process_time: 10}
      - {id: B, process_time: 7}
      - {id: C, process_time: 5}
    buffers:
      - {id: ab, from: A, to: B, conveyor: {length: 6, speed: 0.5}}
      - {id: bc, from: B, to: C, capacity: 4, conveyor: {length: 3, speed: 1}}
    source: {feeds: A, interarrival: 100}
    """
)


def test_conveyor_lead_time_is_work_plus_transit() -> None:
    # A part every 100 s never waits: 10 + 12 (6 m at 0.5 m/s) + 7 + 3 + 5 = 37 s.
    r = simulate(CONVEYORS, hours=10, warmup_hours=1)
    assert r["lead_time_mean"] == pytest.approx(37.0, abs=1e-9)
    assert r["lead_time_p95"] == pytest.approx(37.0, abs=1e-9)
    assert r["throughput_per_hour"] == pytest.approx(36.0)
    assert r["wip"] == pytest.approx(37.0 / 100.0, abs=1e-9)


def test_conveyor_capacity_counts_parts_in_transit() -> None:
    # A (1 s) loads a 10 s conveyor holding 3 parts; B (1 s) unloads a part the moment it
    # arrives. At most 3 parts per 10 s get through, although A and B could do 10.
    spec = line(
        """
        line: belt
        stations:
          - {id: A, process_time: 1}
          - {id: B, process_time: 1}
        buffers:
          - {id: ab, from: A, to: B, capacity: 3, conveyor: {length: 10, speed: 1}}
        """
    )
    # Parts 1-3 enter at 1, 2, 3 and reach B at 11, 12, 13: deliveries at 12, 13, 14, 22, ...
    for horizon, delivered in ((11, 0), (12, 1), (14, 3), (21, 3), (22, 4)):
        assert simulate(spec, hours=horizon / 3600)["delivered"] == delivered
    r = simulate(spec, hours=2, warmup_hours=1)
    assert r["throughput_per_hour"] == pytest.approx(1080.0)
    assert r["stations"]["A"]["blocked"] == pytest.approx(0.7, abs=1e-12)
    assert r["stations"]["B"]["starved"] == pytest.approx(0.7, abs=1e-12)


# -- closed forms: statistical ------------------------------------------------------------------


def buzacott_line(capacity: int, r: float, mean2: float = 10.0) -> LineSpec:
    return line(
        f"""
        line: buzacott
        stations:
          - {{id: M1, process_time: {exp(mean2 / r)}}}
          - {{id: M2, process_time: {exp(mean2)}}}
        buffers:
          - {{id: b, from: M1, to: M2, capacity: {capacity}}}
        """
    )


def buzacott_throughput(capacity: int, r: float, mean2: float = 10.0) -> float:
    """Parts per hour of two exponential stations, buffer ``capacity``, blocking after service."""
    mu2 = 1.0 / mean2
    n = capacity + 2
    if r == 1.0:
        return 3600.0 * mu2 * n / (n + 1)
    return 3600.0 * mu2 * (1.0 - (1.0 - r) / (1.0 - r ** (n + 1)))


@pytest.mark.parametrize("capacity", [0, 1, 5])
@pytest.mark.parametrize("r", [0.8, 1.0, 1.25])
def test_buzacott_two_station_line(capacity: int, r: float) -> None:
    # About 7 000 parts per replication: half-widths of ~2 % at LEVEL.
    results = replicate(
        buzacott_line(capacity, r), hours=25, warmup_hours=1, replications=10, seed=100
    )
    check_ci(results, "throughput_per_hour", buzacott_throughput(capacity, r), rel=0.025)


@pytest.mark.slow
@pytest.mark.parametrize("capacity", [0, 2, 10])
@pytest.mark.parametrize("r", [0.5, 1.0, 2.0])
def test_buzacott_two_station_line_tight(capacity: int, r: float) -> None:
    # 20 replications of 100 h: half-widths of 0.4-0.9 % at LEVEL.
    results = replicate(
        buzacott_line(capacity, r), hours=100, warmup_hours=2, replications=20, seed=200
    )
    check_ci(results, "throughput_per_hour", buzacott_throughput(capacity, r), rel=0.01)


def single_queue(interarrival: str, service: str, servers: int = 1) -> LineSpec:
    return line(
        f"""
        line: queue
        stations:
          - {{id: Q, process_time: {service}, servers: {servers}}}
        source: {{feeds: Q, interarrival: {interarrival}}}
        """
    )


def test_mm1_sojourn_and_wip() -> None:
    # rho = 0.5: sojourn 1 / (mu - lambda) = 20 s, WIP rho / (1 - rho) = 1.
    lam, mu = 0.05, 0.1
    results = replicate(
        single_queue(exp(1 / lam), exp(1 / mu)),
        hours=40,
        warmup_hours=1,
        replications=10,
        seed=300,
    )
    check_ci(results, "lead_time_mean", 1 / (mu - lam), rel=0.06)
    check_ci(results, "wip", 0.5 / (1 - 0.5), rel=0.06)
    check_ci(results, "throughput_per_hour", 3600 * lam, rel=0.03)
    check_ci(results, "stations.Q.busy", 0.5, rel=0.03)
    # Little's law per run, up to the parts in the system at the window's edges.
    for res in results:
        assert res["wip"] == pytest.approx(
            res["throughput_per_hour"] / 3600 * res["lead_time_mean"], rel=0.02
        )


@pytest.mark.slow
def test_mm1_heavy_traffic() -> None:
    # rho = 0.8: sojourn 50 s, WIP 4; long correlations, hence long runs.
    lam, mu = 0.08, 0.1
    results = replicate(
        single_queue(exp(1 / lam), exp(1 / mu)),
        hours=400,
        warmup_hours=5,
        replications=20,
        seed=310,
    )
    check_ci(results, "lead_time_mean", 1 / (mu - lam), rel=0.05)
    check_ci(results, "wip", 0.8 / 0.2, rel=0.05)


def test_md1_pollaczek_khinchine() -> None:
    # M/D/1, rho = 0.6: Wq = lambda D^2 / (2 (1 - rho)) = 4.5 s on top of D = 10 s.
    lam, d = 0.06, 10.0
    wq = lam * d * d / (2 * (1 - lam * d))
    results = replicate(
        single_queue(exp(1 / lam), str(d)), hours=40, warmup_hours=1, replications=10, seed=400
    )
    check_ci(results, "lead_time_mean", wq + d, rel=0.04)
    check_ci(results, "wip", lam * (wq + d), rel=0.04)


def erlang_c_sojourn(lam: float, mu: float, c: int) -> float:
    a = lam / mu
    rho = a / c
    tail = a**c / math.factorial(c) / (1 - rho)
    p_wait = tail / (sum(a**k / math.factorial(k) for k in range(c)) + tail)
    return p_wait / (c * mu - lam) + 1 / mu


def test_mm2_parallel_servers() -> None:
    # Two exponential servers sharing one queue (Erlang C), rho = 0.6.
    lam, mu = 0.12, 0.1
    results = replicate(
        single_queue(exp(1 / lam), exp(1 / mu), servers=2),
        hours=40,
        warmup_hours=1,
        replications=10,
        seed=500,
    )
    check_ci(results, "lead_time_mean", erlang_c_sojourn(lam, mu, 2), rel=0.06)
    check_ci(results, "stations.Q.busy", lam / (2 * mu), rel=0.03)


def test_operation_dependent_failures_preempt_resume() -> None:
    # A saturated station never idles: each 10 s of work meets failures at rate 1/mtbf, each
    # costing mttr on average, so a part takes tau / A, A = mtbf / (mtbf + mttr) = 0.8.
    spec = line(
        """
        line: failing
        stations:
          - {id: F, process_time: 10, failures: {mtbf: 200, mttr: 50}}
        """
    )
    results = replicate(spec, hours=60, warmup_hours=1, replications=20, seed=600)
    check_ci(results, "throughput_per_hour", 3600 * 0.8 / 10, rel=0.02)
    check_ci(results, "stations.F.down", 0.2, rel=0.06)
    window = 59 * 3600
    for res in results:
        st = res["stations"]["F"]
        # Preempt-resume: the busy time is the work of the parts finished, give or take the
        # part in hand at each end of the window (preempt-repeat would add the lost work).
        assert abs(st["busy"] * window - 10 * st["produced"]) <= 10 + 1e-6
        assert st["busy"] + st["down"] == pytest.approx(1.0)


@pytest.mark.parametrize(("mode", "down"), [("time", 100 / 400), ("operation", 0.25 * 100 / 300)])
def test_failure_clock_modes(mode: str, down: float) -> None:
    # A part every 20 s, 5 s of work: busy 1/4 of the time. A time clock fails the machine in
    # any state: down mttr / (mtbf + mttr). An operation clock only wears it while busy: failures
    # at rate busy / mtbf, each down mttr on average.
    spec = line(
        f"""
        line: modes
        stations:
          - {{id: F, process_time: 5, failures: {{mtbf: 300, mttr: 100, mode: {mode}}}}}
        source: {{feeds: F, interarrival: 20}}
        """
    )
    results = replicate(spec, hours=60, warmup_hours=1, replications=20, seed=700)
    check_ci(results, "stations.F.down", down, rel=0.08)
    check_ci(results, "throughput_per_hour", 180.0, rel=0.01)
    check_ci(results, "stations.F.busy", 0.25, rel=0.01)


def test_failures_keep_the_part_and_the_state() -> None:
    # A (1 s) is blocked most of the time by B (3 s); time-clock failures hit it in every state.
    # A blocked server that fails keeps its finished part and is blocked again after the repair,
    # so nothing is lost: B still gets every part A finishes and the line holds at most 4 parts.
    spec = line(
        """
        line: fail-blocked
        stations:
          - {id: A, process_time: 1, failures: {mtbf: 50, mttr: 10, mode: time}}
          - {id: B, process_time: 3}
        buffers:
          - {id: ab, from: A, to: B, capacity: 2}
        """
    )
    for seed in range(5):
        r = simulate(spec, hours=3, warmup_hours=0.5, seed=seed)
        a, b = r["stations"]["A"], r["stations"]["B"]
        assert a["blocked"] > 0.3 and a["down"] > 0.05
        assert abs(a["produced"] - b["produced"]) <= 4
        assert 1.0 <= r["wip"] <= 4.0


def failing_line_throughput(capacity: int, mu1: float, mu2: float, f: float, g: float) -> float:
    """Two exponential stations, M1 with operation-dependent failures (rate f, repair g).

    States (n, up) with n = 0..N (N = capacity + 2: parts at M2, in the buffer and blocked at
    M1) and (n, down) with n < N (M1 fails only while busy). Solve pi Q = 0 by least squares.
    """
    n_max = capacity + 2
    states = [(n, True) for n in range(n_max + 1)] + [(n, False) for n in range(n_max)]
    index = {s: i for i, s in enumerate(states)}
    q = np.zeros((len(states), len(states)))
    for (n, up), i in index.items():
        if up and n < n_max:
            q[i, index[(n + 1, True)]] += mu1
            q[i, index[(n, False)]] += f
        if not up:
            q[i, index[(n, True)]] += g
        if n > 0:
            q[i, index[(n - 1, up)]] += mu2
    np.fill_diagonal(q, -q.sum(axis=1))
    a = np.vstack([q.T, np.ones(len(states))])
    b = np.zeros(len(states) + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    p_m2_busy = sum(pi[i] for (n, _), i in index.items() if n > 0)
    return float(3600.0 * mu2 * p_m2_busy)


def test_failures_with_blocking_match_markov_chain() -> None:
    spec = line(
        f"""
        line: failing-pair
        stations:
          - {{id: M1, process_time: {exp(10)}, failures: {{mtbf: 100, mttr: 20}}}}
          - {{id: M2, process_time: {exp(10)}}}
        buffers:
          - {{id: b, from: M1, to: M2, capacity: 2}}
        """
    )
    exact = failing_line_throughput(2, 0.1, 0.1, 1 / 100, 1 / 20)
    results = replicate(spec, hours=40, warmup_hours=1, replications=10, seed=800)
    check_ci(results, "throughput_per_hour", exact, rel=0.03)


def test_scrap_fraction_and_quality() -> None:
    spec = line(
        """
        line: scrap
        stations:
          - {id: A, process_time: 2, scrap_rate: 0.1}
          - {id: B, process_time: 1}
        buffers:
          - {id: ab, from: A, to: B, capacity: 5}
        """
    )
    results = replicate(spec, hours=2, warmup_hours=0.5, replications=10, seed=900)
    for res in results:
        a = res["stations"]["A"]
        res["good_share"] = res["delivered"] / (res["delivered"] + a["scrapped"])
        assert res["bottleneck"] == "A"
        # A never waits: A = 1, P = 2 s * finished / window (exact up to the part in hand).
        assert res["oee"]["availability"] == 1.0
        assert res["oee"]["performance"] == pytest.approx(1.0, abs=2 / 5400 + 1e-12)
        assert res["oee"]["quality"] == a["produced"] / (a["produced"] + a["scrapped"])
        # What A finishes reaches the sink, up to the parts between them (buffer + B).
        assert 0 <= a["produced"] - res["delivered"] <= 5 + 1
        # Scrapped parts leave the line: at most A + buffer + B hold parts.
        assert 1 <= res["wip"] <= 1 + 5 + 1
    check_ci(results, "good_share", 0.9, rel=0.01)
    check_ci(results, "oee.quality", 0.9, rel=0.01)


def test_probability_routing_splits_in_proportion() -> None:
    spec = line(
        """
        line: split
        stations:
          - {id: S, process_time: 1, routing: {policy: probability, weights: {bx: 1, by: 3}}}
          - {id: X, process_time: 0.5}
          - {id: Y, process_time: 0.5}
        buffers:
          - {id: bx, from: S, to: X, capacity: 5}
          - {id: by, from: S, to: Y, capacity: 5}
        """
    )
    results = replicate(spec, hours=1, warmup_hours=0.1, replications=10, seed=1000)
    for res in results:
        st = res["stations"]
        res["x_share"] = st["X"]["produced"] / (st["X"]["produced"] + st["Y"]["produced"])
    check_ci(results, "x_share", 0.25, rel=0.05)


# -- invariants on a line with everything -----------------------------------------------------

EVERYTHING = line(
    """
    line: everything
    stations:
      - {id: S1, process_time: {dist: lognormal, mean: 20, cv: 0.5}}
      - {id: S2, process_time: {dist: gamma, mean: 30, cv: 0.8}, servers: 2,
         failures: {mtbf: 600, mttr: 60}}
      - {id: S3, process_time: {dist: uniform, low: 10, high: 50}, scrap_rate: 0.05,
         failures: {mtbf: 900, mttr: 120, mode: time}}
      - {id: S4, process_time: {dist: empirical, values: [5, 10, 30]},
         routing: {policy: probability, weights: {b45: 2, b46: 1}}}
      - {id: S5, process_time: {dist: exponential, mean: 15}}
      - {id: S6, process_time: 12, routing: shortest_queue}
      - {id: S7, process_time: {dist: exponential, mean: 8}}
      - {id: S8, process_time: 9, servers: 2}
    buffers:
      - {id: b12, from: S1, to: S2, capacity: 0}
      - {id: b13, from: S1, to: S3, conveyor: {length: 8, speed: 0.4}}
      - {id: b24, from: S2, to: S4, capacity: 3}
      - {id: b34, from: S3, to: S4, capacity: 2}
      - {id: b45, from: S4, to: S5, capacity: 2}
      - {id: b46, from: S4, to: S6, capacity: 0}
      - {id: b57, from: S5, to: S7, capacity: 4}
      - {id: b67, from: S6, to: S7, capacity: 1, conveyor: {length: 5, speed: 1}}
      - {id: b68, from: S6, to: S8, capacity: 2}
    source: {feeds: S7, interarrival: {dist: exponential, mean: 120}}
    """
)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_invariants_on_a_line_with_everything(seed: int) -> None:
    r = simulate(EVERYTHING, hours=6, warmup_hours=1, seed=seed)
    assert set(r) == {
        "throughput_per_hour",
        "wip",
        "lead_time_mean",
        "lead_time_p95",
        "delivered",
        "events",
        "completions",
        "stations",
        "oee",
        "bottleneck",
    }
    stations = r["stations"]
    assert list(stations) == [f"S{i}" for i in range(1, 9)]
    for sid, st in stations.items():
        fractions = [st["busy"], st["blocked"], st["starved"], st["down"]]
        assert sum(fractions) == pytest.approx(1.0, abs=1e-9), sid
        assert all(-1e-12 <= f <= 1 + 1e-12 for f in fractions), sid
        if sid not in ("S2", "S3"):
            assert st["down"] == 0.0
        if sid != "S3":
            assert st["scrapped"] == 0
    assert stations["S3"]["scrapped"] > 0
    assert stations["S2"]["down"] > 0 and stations["S3"]["down"] > 0
    # Sinks deliver at the instant they finish.
    assert r["delivered"] == stations["S7"]["produced"] + stations["S8"]["produced"]
    assert r["throughput_per_hour"] == pytest.approx(r["delivered"] / 5)
    # The bottleneck is the station with the largest busy + down share; the line's OEE is its.
    active = {sid: st["busy"] + st["down"] for sid, st in stations.items()}
    assert active[r["bottleneck"]] == max(active.values())
    bn = stations[r["bottleneck"]]
    oee = r["oee"]
    assert oee["availability"] == pytest.approx(1 - bn["down"])
    assert oee["oee"] == pytest.approx(oee["availability"] * oee["performance"] * oee["quality"])
    finished = bn["produced"] + bn["scrapped"]
    assert oee["quality"] == pytest.approx(bn["produced"] / finished)
    assert r["completions"] >= sum(st["produced"] + st["scrapped"] for st in stations.values())
    assert r["events"] > r["completions"]
    assert r["lead_time_p95"] >= r["lead_time_mean"] > 0
    assert r["wip"] > 0


def test_bottleneck_counts_down_time_as_active() -> None:
    # A works 10 s per part but is down a third of the time (15 s per part in effect); B needs
    # 13 s. B is busier, but A, busy or down nearly all the time, is what holds the line up.
    spec = line(
        """
        line: active
        stations:
          - {id: A, process_time: 10, failures: {mtbf: 100, mttr: 50}}
          - {id: B, process_time: 13}
        buffers:
          - {id: ab, from: A, to: B, capacity: 5}
        """
    )
    for seed in range(3):
        r = simulate(spec, hours=20, warmup_hours=1, seed=seed)
        a, b = r["stations"]["A"], r["stations"]["B"]
        assert b["busy"] > a["busy"]
        assert r["bottleneck"] == "A"
        assert r["oee"]["availability"] == pytest.approx(1 - a["down"])


def test_runs_are_reproducible_and_replications_use_consecutive_seeds() -> None:
    a = simulate(EVERYTHING, hours=2, seed=5)
    assert simulate(EVERYTHING, hours=2, seed=5) == a
    assert simulate(EVERYTHING, hours=2, seed=6) != a
    assert replicate(EVERYTHING, hours=2, replications=2, seed=5) == [
        a,
        simulate(EVERYTHING, hours=2, seed=6),
    ]


def test_rejects_a_window_that_is_empty() -> None:
    with pytest.raises(ValueError, match="warmup_hours"):
        simulate(SERIAL, hours=1, warmup_hours=1)
    with pytest.raises(ValueError, match="warmup_hours"):
        simulate(SERIAL, hours=0)


# -- the pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dist",
    [
        Distribution.exponential(12.0),
        Distribution(kind=DistKind.LOGNORMAL, mean=20.0, cv=0.5),
        Distribution(kind=DistKind.GAMMA, mean=30.0, cv=0.8),
        Distribution(kind=DistKind.UNIFORM, mean=30.0, low=10.0, high=50.0),
        Distribution(kind=DistKind.EMPIRICAL, mean=15.0, values=(5.0, 10.0, 30.0)),
        Distribution.deterministic(7.0),
    ],
    ids=lambda d: d.kind.value,
)
def test_draw_matches_mean_and_variance(dist: Distribution) -> None:
    # 400 000 samples: standard errors of 0.16 % (mean) and < 1 % (variance) at cv <= 1.
    x = draw(dist, Generator(PCG64(1)), 400_000)
    assert x.mean() == pytest.approx(dist.mean, rel=0.01)
    assert x.var() == pytest.approx(dist.variance, rel=0.04, abs=1e-9)
    assert x.min() >= 0.0


def test_summarize_matches_a_hand_computed_t_interval() -> None:
    results = [{"a": {"b": v}} for v in (1.0, 2.0, 3.0, 4.0, 5.0)]
    s = summarize(results, "a.b")
    # mean 3, s = sqrt(2.5), t(0.975, 4) = 2.776445
    assert s.mean == 3.0
    assert s.halfwidth == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert 1.04 in s and 1.03 not in s
    with pytest.raises(ValueError):
        summarize(results[:1], "a.b")

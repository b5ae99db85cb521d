"""Gradient refinement: the IPA gradient agrees with finite differences on the same sample path,
and refinement moves processing-time targets uphill within their ranges."""

from __future__ import annotations

import pytest

from physics.process import serial
from scenes.lineparse import parse_line
from twin.design import gradient
from twin.design.space import parse_space

LINE = """
line: g3
stations:
  - {id: a, process_time: {dist: exponential, mean: 10}}
  - {id: b, process_time: {dist: lognormal, mean: 11, cv: 0.4}, failures: {mtbf: 900, mttr: 60}}
  - {id: c, process_time: {dist: gamma, mean: 10.5, cv: 0.5}}
buffers:
  - {id: b1, from: a, to: b, capacity: 2}
  - {id: b2, from: b, to: c, capacity: 1}
"""

PARTS, WARM = 3000, 200


def test_ipa_gradient_agrees_with_finite_differences():
    spec = parse_line(LINE)
    th, grad = gradient.throughput_gradient(spec, parts=PARTS, warmup_parts=WARM, seed=3)
    means = {s.id: s.process_time.mean for s in spec.stations}
    for sid in means:
        # The sample path is piecewise linear in the means: the central difference equals the
        # derivative unless a kink (a tie between two constraints) lies within +-h, which a
        # step of 1e-3 met on some seeds' paths (0.2% off); at 1e-5 six seeds agree to 1e-8.
        h = 1e-5
        up = gradient.throughput_of_means(
            spec, {**means, sid: means[sid] + h}, parts=PARTS, warmup_parts=WARM, seed=3
        )
        dn = gradient.throughput_of_means(
            spec, {**means, sid: means[sid] - h}, parts=PARTS, warmup_parts=WARM, seed=3
        )
        fd = (up - dn) / (2 * h)
        assert grad[sid] == pytest.approx(fd, rel=1e-3, abs=1e-6), sid
        assert grad[sid] < 0  # a slower station never raises throughput
    # the same figures as the process core's own (per-call compiled) gradient
    th2, grad2 = serial.throughput_gradient(spec, parts=PARTS, warmup_parts=WARM, seed=3)
    assert th == pytest.approx(th2, rel=1e-12)
    assert grad == pytest.approx(grad2, rel=1e-9)
    # room for a whole space (larger failure budget, larger ring) changes nothing on the path
    th3, grad3 = gradient.throughput_gradient(
        spec, parts=PARTS, warmup_parts=WARM, seed=3, fail_rate=0.5, max_capacity=8
    )
    assert th3 == pytest.approx(th, rel=1e-12) and grad3 == pytest.approx(grad, rel=1e-9)


def test_refinement_moves_uphill_within_ranges():
    spec = parse_line(LINE)
    space = parse_space(
        """
design: g
parameters:
  - {target: stations.b.process_time, range: [8, 12]}
  - {target: stations.c.process_time, range: [8, 12]}
  - {target: buffers.b1.capacity, values: [1, 2]}
objectives: [throughput, cost]
gradient: {refine: 1, steps: 3, step: 0.25, parts: 3000, warmup_parts: 200}
""",
        spec,
    )
    start = {"b_process_time": 11.5, "c_process_time": 11.0, "b1_capacity": 2}
    steps = gradient.refine(space, spec, start, seed=1)
    assert 1 <= len(steps) <= 3
    th0, _ = gradient.throughput_gradient(spec, parts=PARTS, warmup_parts=WARM, seed=1)
    last = steps[-1]
    assert 8 <= last["b_process_time"] <= 12 and 8 <= last["c_process_time"] <= 12
    assert last["b_process_time"] < start["b_process_time"]
    assert last["b1_capacity"] == 2  # only continuous processing times move
    from twin.design.space import apply

    th1, _ = gradient.throughput_gradient(
        apply(spec, space, last), parts=PARTS, warmup_parts=WARM, seed=1
    )
    assert th1 > th0

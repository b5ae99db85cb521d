"""The Ray backend: a local Ray started here gives the same table as the local backend."""

from __future__ import annotations

import numpy as np
import pytest

from scenes.lineparse import parse_line
from twin.design import generators
from twin.design.evaluate import Backend, evaluate_variants
from twin.design.space import parse_space

ray = pytest.importorskip("ray")

# Ray starts its processes with fork+exec while JAX threads run; the exec makes that safe.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")

LINE = """
line: r2
stations:
  - {id: a, process_time: {dist: exponential, mean: 10}, failures: {mtbf: 400, mttr: 40}}
  - {id: b, process_time: {dist: lognormal, mean: 11, cv: 0.5}}
buffers:
  - {id: b1, from: a, to: b, capacity: 2}
"""

SPACE = """
design: r
parameters:
  - {target: buffers.b1.capacity, values: [1, 2, 3, 5]}
  - {target: stations.b.process_time, range: [9, 12], levels: 2}
objectives: [throughput, cost]
simulation: {hours: 2, replications: 3, seed: 5, batch: 4}
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_backend_returns_the_local_table(local_ray):
    line = parse_line(LINE)
    space = parse_space(SPACE, line)
    variants = generators.grid(space)
    _plan_l, local = evaluate_variants(space, line, variants, space.simulation)
    plan_r, remote = evaluate_variants(space, line, variants, space.simulation, backend=Backend.RAY)
    assert len(plan_r.jobs) == 2
    for a, b in zip(local, remote, strict=True):
        for k in a.lanes:
            np.testing.assert_array_equal(a.lanes[k], b.lanes[k])
        assert (a.throughput, a.wip, a.bottleneck) == (b.throughput, b.wip, b.bottleneck)

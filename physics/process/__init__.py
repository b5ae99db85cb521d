"""The JAX process core: exact discrete-event simulation of production lines, batched.

- ``model``: static :class:`~physics.process.model.Model` and traced ``Params`` from a LineSpec;
- ``engine``: the general event-driven engine (pure ``init``/``step``/``run``);
- ``serial``: the (max,+) fast path for saturated serial lines, and its gradient;
- ``kpi``: throughput, WIP, lead time, OEE, time fractions, bottleneck;
- ``api``: ``simulate`` one line, ``evaluate`` batches of variants.

Semantics: ``docs/process-semantics.md``. Importing this package enables JAX float64, and asks
XLA for one CPU device per core (``devices``: large batches are spread over them) if no JAX
backend has started yet.
"""

from physics.process.devices import configure as _configure_devices

_configure_devices()

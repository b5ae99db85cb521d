"""Edits of a batched engine :class:`~physics.process.engine.State` and of a line spec that make
injected events possible: a station forced down until a given time, buffers filled.

The engine repairs a station only if its model gives it failures (a repair clock); a station the
line file gives none gets one that never fires (:func:`breakable`), so a scenario or a fork can
put it down and the engine brings it up at the time set here. Every function is pure: it returns
a new state (JAX arrays are immutable, so a state kept for a checkpoint stays as it was).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from physics.process.engine import State
from physics.process.model import BUSY, DOWN, Model
from scenes.spec import FailureMode, Failures, LineSpec

#: Mean time between failures given to stations that have none: they never fail by themselves
#: (finite, so that no draw can make it nan).
NEVER_S = 1e300


def breakable(spec: LineSpec) -> LineSpec:
    """``spec`` with a repair clock on every station: those without failures get failures that
    never happen (``mtbf`` :data:`NEVER_S`, time mode). The random streams do not change."""
    stations = tuple(
        st
        if st.failures is not None
        else dataclasses.replace(
            st, failures=Failures(mtbf=NEVER_S, mttr=1.0, mode=FailureMode.TIME)
        )
        for st in spec.stations
    )
    return dataclasses.replace(spec, stations=stations)


def force_down(model: Model, state: State, station: int, until_s: float) -> State:
    """Every server of ``station`` down (in every lane) until engine time ``until_s`` (inf: until
    :func:`set_repair`). A part in work resumes where it stopped; the station's own failure
    clock is stopped meanwhile (the repair restarts it)."""
    slots = list(model.slots(station))
    now = np.asarray(state.now)[:, None]
    st = np.asarray(state.st)[:, slots]
    t_end = np.asarray(state.t_end)[:, slots]
    t_rep = np.asarray(state.t_rep)[:, slots]
    rem = np.where(st == BUSY, np.maximum(t_end - now, 0.0), np.asarray(state.rem)[:, slots])
    prev = np.where(st == DOWN, np.asarray(state.prev)[:, slots], st)
    # already down by itself: the later of the two repairs
    rep = np.where((st == DOWN) & np.isfinite(t_rep), np.maximum(t_rep, until_s), until_s)
    return dataclasses.replace(
        state,
        prev=state.prev.at[:, slots].set(jnp.asarray(prev, state.prev.dtype)),
        rem=state.rem.at[:, slots].set(rem),
        t_end=state.t_end.at[:, slots].set(jnp.inf),
        t_fail=state.t_fail.at[:, slots].set(jnp.inf),
        st=state.st.at[:, slots].set(DOWN),
        t_rep=state.t_rep.at[:, slots].set(np.maximum(rep, now)),
    )


def set_repair(model: Model, state: State, station: int, at_s: float) -> State:
    """The down servers of ``station`` are repaired at engine time ``at_s`` (not before the
    state's time)."""
    slots = list(model.slots(station))
    now = np.asarray(state.now)[:, None]
    st = np.asarray(state.st)[:, slots]
    rep = np.where(st == DOWN, np.maximum(at_s, now), np.asarray(state.t_rep)[:, slots])
    return dataclasses.replace(state, t_rep=state.t_rep.at[:, slots].set(rep))


def fill_buffer(model: Model, state: State, buffer: int, parts: int, transit_s: float) -> State:
    """Buffer ``buffer`` holds exactly ``parts`` parts (in every lane), ready to leave now; WIP
    follows. Parts put there enter at ``now - transit_s`` and were released now."""
    now = np.asarray(state.now)
    count = np.asarray(state.count)[:, buffer]
    ring = model.ring
    entry = np.where(np.arange(ring)[None, :] < parts, (now - transit_s)[:, None], 0.0)
    rel = np.where(np.arange(ring)[None, :] < parts, now[:, None], 0.0)
    return dataclasses.replace(
        state,
        ring_t=state.ring_t.at[:, buffer].set(entry),
        ring_r=state.ring_r.at[:, buffer].set(rel),
        head=state.head.at[:, buffer].set(0),
        count=state.count.at[:, buffer].set(parts),
        wip=state.wip + jnp.asarray(parts - count, state.wip.dtype),
    )


def is_down(model: Model, state: State, station: int, lane: int = 0) -> bool:
    return bool(np.all(np.asarray(state.st)[lane, list(model.slots(station))] == DOWN))

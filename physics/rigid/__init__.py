"""Rigid-body robot cells with pybullet: a robot picking parts off a conveyor, in real physics.

Modules (none imported here: pybullet loads only when a cell module is imported):

- ``layout``: the static description of a cell (:class:`~physics.rigid.layout.CellConfig`:
  robot URDF and base pose, infeed and outfeed conveyors, station table, parts, arrivals), built
  from a line file's station by ``CellConfig.from_station``.
- ``motion``: IK with a reachability check (``UnreachableError``) and synchronized trapezoidal
  joint trajectories within the URDF's position and velocity limits.
- ``task``: the pick-and-place cycle as a state machine stepped with the simulation.
- ``cell``: :class:`~physics.rigid.cell.Cell`, one pybullet world (its own DIRECT client) with
  stepping, conveyors, contacts and alarms, the keep-out field, batched pose reads and
  save/restore.
- ``events``: the events a cell reports and the results of its cycles.
- ``pool``: many cells in worker processes (pybullet holds the GIL: scale with processes).

Typical use (the twin's process core asks a cell how long a cycle really takes)::

    from physics.rigid.cell import Cell
    cell = Cell.from_spec(line.station("framing"), seed=1)
    result = cell.run_cycle()          # steps until the cycle ends
    result.duration_s                   # the cycle's real duration (s)
    names, pos, quat = cell.link_poses()  # robot links, world frame, (x, y, z, w)

See docs/robot-cells.md.
"""

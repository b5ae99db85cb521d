"""A scenario run to its end as fast as it can, without a server: scripted trainee actions are
applied at their scenario times. Deterministic for a given scenario (its seed) and script.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streaming.store import SceneStore

from .line import ScenarioLine
from .spec import Scenario, ScriptedAction


def open_line(scenario: Scenario, **kw: Any) -> tuple[ScenarioLine, SceneStore]:
    """A :class:`ScenarioLine` of ``scenario`` writing into a fresh scene store (no assets)."""
    from scenes.graph import build_graph

    line = ScenarioLine(scenario, build_graph(scenario.line), **kw)
    store = SceneStore()
    line.populate(store)
    return line, store


def play(
    line: ScenarioLine, actions: Iterable[ScriptedAction], *, until: float | None = None
) -> None:
    """Advance ``line`` to scenario time ``until`` (default: the end), applying each action of
    ``actions`` at its time (actions before the line's time are applied now, in order)."""
    end = line.scenario.duration_s if until is None else until
    for a in sorted(actions, key=lambda a: a.at_s):
        if a.at_s > end:
            break
        if a.at_s > line.t:
            line.run_to(a.at_s)
        line.act(a.who, a.action, a.target, a.args)
    line.run_to(end)


def run_headless(scenario: Scenario, actions: Iterable[ScriptedAction] = ()) -> dict[str, Any]:
    """Run ``scenario`` to its end with ``actions`` and return its report (a JSON object)."""
    line, _ = open_line(scenario)
    play(line, actions)
    return line.report()

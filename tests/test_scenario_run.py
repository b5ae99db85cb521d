"""Scenarios without a server: a hand-computed score, determinism, checkpoints and rewind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twin.scenario.headless import open_line, play, run_headless
from twin.scenario.report import render_html
from twin.scenario.spec import ScriptedAction, load_scenario, parse_actions

#: One deterministic station: a part every 10 s, so every number below is computed by hand.
PRESS_LINE = """\
line: press
stations:
  - id: press
    process_time: 10
"""

PRESS_SCENARIO = """\
scenario: press-down
line: press.yaml
duration: 600
sample: 10
events:
  - {at: 95, type: breakdown, station: press, for: 200}
actions:
  acknowledge: true
  maintenance: {repair: 20}
scoring:
  recovery: {points: 40, percent: 90, within: 120, window: 60, baseline_per_hour: 360}
  acknowledge: {points: 20, within: 60}
  safety: {points: 30}
"""

TRAINEE = """\
- {at: 125, action: alarm.ack, target: press}
- {at: 135, action: station.maintenance, target: press}
"""

#: Two random stations with random failures: checkpoints must replay them exactly.
FLAKY_LINE = """\
line: flaky
stations:
  - id: a
    process_time: {dist: exponential, mean: 8}
    failures: {mtbf: 300, mttr: 60}
  - id: b
    process_time: {dist: exponential, mean: 9}
    failures: {mtbf: 400, mttr: 50, mode: time}
buffers:
  - {id: q, from: a, to: b, capacity: 5}
"""

FLAKY_SCENARIO = """\
scenario: flaky
line: flaky.yaml
seed: 11
duration: 1200
sample: 20
start: {warmup: 100, random_failures: true, buffers: {q: 3}}
events:
  - {at: 150, type: breakdown, station: b, for: 300}
  - {at: 500, type: shortage, for: 100}
  - {at: 700, type: rush_order, parts: 40, within: 300}
"""


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


@pytest.fixture
def press(tmp_path: Path) -> Path:
    write(tmp_path, "press.yaml", PRESS_LINE)
    return write(tmp_path, "press.scenario.yaml", PRESS_SCENARIO)


@pytest.fixture
def flaky(tmp_path: Path) -> Path:
    write(tmp_path, "flaky.yaml", FLAKY_LINE)
    return write(tmp_path, "flaky.scenario.yaml", FLAKY_SCENARIO)


def test_scripted_trainee_scores_the_hand_computed_points(press: Path) -> None:
    sc = load_scenario(press)
    r = run_headless(sc, parse_actions(TRAINEE, sc))
    # Parts finish at 10, 20, ..., 90. The press goes down at 95 holding a part started at 90
    # (5 s left); maintenance at 135 repairs it by 155, the part finishes at 160, then one every
    # 10 s: 160, 170, ..., 600 is 45 parts; 9 + 45 = 54.
    assert r["kpis"]["delivered"] == 54
    assert r["alarms"] == [
        {
            "id": "alarm/1",
            "entity": "station/press",
            "text": "press is down",
            "severity": "major",
            "raised_t": 95.0,
            "acked_by": "script",
            "acked_t": 125.0,
        }
    ]
    by = {c["criterion"]: c for c in r["score"]["criteria"]}
    # Throughput over the last 60 s reaches 90% of 360/h (6 parts) first at t = 210: D(210) =
    # 15, D(150) = 9. That is 115 s after the event, within 120: full points.
    assert by["recovery"]["recovered_after_s"] == 115.0
    assert by["recovery"]["points"] == 40.0
    assert by["acknowledge"]["points"] == 20.0  # acknowledged after 30 s, within 60
    assert by["safety"]["points"] == 30.0
    assert r["score"]["total"] == 90.0 and r["score"]["max"] == 90.0


def test_a_passive_trainee_scores_only_safety(press: Path) -> None:
    r = run_headless(load_scenario(press))
    # repaired at 295: the part finishes at 300, then 310, ..., 600: 9 + 31 = 40 parts
    assert r["kpis"]["delivered"] == 40
    by = {c["criterion"]: c for c in r["score"]["criteria"]}
    # D(350) - D(290) = 15 - 9 = 6 parts: recovered 255 s after the event, too late
    assert by["recovery"]["recovered_after_s"] == 255.0
    assert by["recovery"]["points"] == 0.0
    assert by["acknowledge"]["points"] == 0.0
    assert r["score"]["total"] == 30.0


def test_a_refused_action_is_recorded_and_changes_nothing(press: Path) -> None:
    sc = load_scenario(press)
    acts = parse_actions("- {at: 50, action: station.speed, target: press, args: {scale: 2}}", sc)
    r = run_headless(sc, acts)
    assert r["actions"][0]["ok"] is False
    assert "not allowed" in r["actions"][0]["reason"]
    assert r["kpis"]["delivered"] == 40


def test_headless_runs_are_deterministic_and_the_html_is_self_contained(flaky: Path) -> None:
    sc = load_scenario(flaky)
    acts = [ScriptedAction(at_s=160, action="station.maintenance", target="b")]
    a, b = run_headless(sc, acts), run_headless(sc, acts)
    assert a == b
    assert a["kpis"]["delivered"] > 0
    page = render_html(a)
    assert page.count("data:image/png;base64,") == 1
    assert "http://" not in page and "https://" not in page


def test_rewind_to_a_checkpoint_and_replaying_gives_the_same_result(flaky: Path) -> None:
    sc = load_scenario(flaky)
    later = [
        ScriptedAction(at_s=460, action="station.stop", target="a"),
        ScriptedAction(at_s=520, action="station.start", target="a"),
        ScriptedAction(at_s=710, action="alarm.ack", target="all"),
    ]
    line, _ = open_line(sc)
    play(line, [ScriptedAction(at_s=170, action="alarm.ack", target="b")], until=400)
    cp = line.checkpoint()
    play(line, later)
    first = line.report()
    state_first = line.state
    assert first["finished"]

    line.rewind(cp.id)
    assert line.t == pytest.approx(400) and not line.finished
    assert len(line.progress.actions) == 1  # the record after the checkpoint is gone
    play(line, later)
    second = line.report()
    assert second["kpis"] == first["kpis"]  # bit-identical floats
    assert second["timeline"] == first["timeline"]
    assert second["score"] == first["score"]
    assert second["alarms"] == first["alarms"]
    for name in ("st", "t_end", "t_rep", "count", "acc", "key"):
        assert np.array_equal(
            np.asarray(getattr(line.state, name)), np.asarray(getattr(state_first, name))
        )


def test_the_example_scenarios_load(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent / "scenes" / "examples"
    names = sorted(p.name for p in root.glob("*.scenario.yaml"))
    assert {"bottling.scenario.yaml", "biw_welding.scenario.yaml"} <= set(names)
    for n in names:
        sc = load_scenario(root / n)
        assert sc.events and sc.duration_s > 0


def test_the_end_callback_may_ask_for_the_report(press: Path) -> None:
    """``twin scenario --report`` writes the report from the end callback, inside the tick."""
    got: list[dict[str, object]] = []
    line, _ = open_line(load_scenario(press), on_end=lambda ln: got.append(ln.report()))
    line.run_to_end()
    assert len(got) == 1 and got[0]["finished"] is True and line.paused

"""Bad scenario and actions files: every problem named by file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import unreadable_files

from scenes.errors import ConfigError
from twin.scenario.spec import (
    ScenarioFileError,
    load_actions,
    load_scenario,
    parse_actions,
    parse_scenario,
)

LINE = """\
line: two
stations:
  - {id: a, process_time: 5}
  - {id: b, process_time: 6}
buffers:
  - {id: q, from: a, to: b, capacity: 4}
  - id: belt
    from: b
    to: c
    conveyor: {length: 2, speed: 0.5, path: [[0, 0, 0], [2, 0, 0]]}
  - {id: q2, from: a, to: c, capacity: 1}
"""


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "two.yaml").write_text(
        LINE.replace(
            "  - {id: b, process_time: 6}\n",
            "  - {id: b, process_time: 6}\n  - {id: c, process_time: 4}\n",
        )
    )
    return tmp_path


def problems(text: str, base: Path) -> list[str]:
    with pytest.raises(ScenarioFileError) as info:
        parse_scenario(text, filename="s.yaml", base_dir=base)
    assert isinstance(info.value, ConfigError)
    return str(info.value).splitlines()


def test_a_good_file_parses(base: Path) -> None:
    sc = parse_scenario(
        "scenario: s\nline: two.yaml\nduration: 100\n"
        "events:\n  - {at: 50, type: conveyor_slow, buffer: belt, factor: 2}\n"
        "  - {at: 10, type: breakdown, station: a, for: 5}\n",
        filename="s.yaml",
        base_dir=base,
    )
    assert [e.at_s for e in sc.events] == [10.0, 50.0]  # sorted by time
    assert sc.events[1].line == 5


def test_errors_name_file_line_and_field(base: Path) -> None:
    text = """\
scenario: s
line: two.yaml
duration: 100
start:
  warmup: -5
  buffers: {q: 9}
events:
  - {at: 10, type: breakdown, station: z, for: 5}
  - {at: 20, type: brekdown, station: a, for: 5}
  - {at: 30, type: conveyor_slow, buffer: q, factor: 2}
  - {at: 500, type: shortage, for: 5}
  - {at: 40, type: breakdown, station: a}
scoring:
  recovery: {percent: 150, windw: 60}
"""
    got = problems(text, base)
    expect = [
        "s.yaml:5 start.warmup: must be >= 0, got -5",
        "s.yaml:6 start.buffers.q: buffer 'q' holds at most 4 parts, got 9",
        "s.yaml:8 events[0].station: no station 'z' in the line",
        "s.yaml:9 events[1].type: unknown event type 'brekdown'; did you mean 'breakdown'?",
        "s.yaml:10 events[2].buffer: buffer 'q' is not a conveyor (no transit time)",
        "s.yaml:11 events[3].at: must be before the end (duration 100 s)",
        "s.yaml:12 events[4]: missing required field 'for' (a breakdown event)",
        "s.yaml:14 scoring.recovery.percent: must be <= 100, got 150",
        "s.yaml:14 scoring.recovery.windw: unknown field; did you mean 'window'?",
    ]
    for e in expect:
        assert any(line.startswith(e) for line in got), (e, got)


def test_missing_fields_and_a_missing_line_file(base: Path) -> None:
    got = problems("scenario: s\nline: nope.yaml\n", base)
    assert any("missing required field 'duration'" in g for g in got)
    assert any(g.startswith("s.yaml:2 line: no line file 'nope.yaml'") for g in got)


def test_yaml_syntax_errors_have_a_line(base: Path) -> None:
    got = problems("scenario: s\nline: [two.yaml\nduration: 5\n", base)
    assert got[0].startswith("s.yaml:")


def test_a_bad_line_file_is_reported_through_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("line: bad\nstations:\n  - {id: a, process_time: -1}\n")
    (tmp_path / "s.yaml").write_text("scenario: s\nline: bad.yaml\nduration: 10\n")
    with pytest.raises(ScenarioFileError) as info:
        load_scenario(tmp_path / "s.yaml")
    msg = str(info.value)
    assert f"{tmp_path / 's.yaml'}:2 line:" in msg and "bad.yaml:3" in msg


def test_actions_files_are_checked(base: Path) -> None:
    sc = parse_scenario("scenario: s\nline: two.yaml\nduration: 100\n", filename="s", base_dir=base)
    with pytest.raises(ScenarioFileError) as info:
        parse_actions(
            "- {at: 5, action: station.stp, target: a}\n- {at: 500, action: alarm.ack, target: all}\n"
            "- {at: 5, action: alarm.ack}\n",
            sc,
            filename="a.yaml",
        )
    got = str(info.value).splitlines()
    assert got[0].startswith("a.yaml:1 [0].action: unknown action 'station.stp'; did you mean")
    assert got[1].startswith("a.yaml:2 [1].at: is after the end")
    assert got[2] == "a.yaml:3 [2]: missing required field 'target'"


def test_unreadable_scenario_and_action_files(tmp_path: Path) -> None:
    for path, message in unreadable_files(tmp_path, "scenario"):
        with pytest.raises(ScenarioFileError) as info:
            load_scenario(path)
        (p,) = info.value.problems
        assert (p.file, p.line, p.path, p.message) == (str(path), 0, "", message)
    with pytest.raises(ScenarioFileError, match="No such file or directory"):
        load_actions(tmp_path / "missing-actions.yaml", None)  # type: ignore[arg-type]

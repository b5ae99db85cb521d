"""Line files: every accepted form parses to the right values; every mistake is reported once,
at its file, line and field path, with a message that says what is wrong."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import unreadable_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenes import yamlpos
from scenes.errors import ConfigError, LineFileError, Problem
from scenes.lineparse import load_line, parse_line
from scenes.spec import (
    DistKind,
    Distribution,
    FailureMode,
    LineSpec,
    RoutingPolicy,
    TagBinding,
)

REPO = Path(__file__).resolve().parent.parent
FILE = "line.yaml"

VERBATIM = """\
line: two-station            # the line's name
stations:
  - id: m1                   # unique id: letters, digits, '_' or '-'
    process_time: 30         # seconds; a number means deterministic
    failures: {mtbf: 3600, mttr: 300, mode: operation}   # exponential up and down times;
                             # mode: operation (fails only while busy) or time (fails any time)
  - id: m2
    process_time: {dist: exponential, mean: 28}
    servers: 2               # identical parallel machines at this station (default 1)
    scrap_rate: 0.01         # fraction of parts scrapped at this station (default 0)
buffers:
  - {id: b1, from: m1, to: m2, capacity: 5}   # capacity 0 = direct handoff, no buffer
"""


def parse(text: str, **kwargs: Any) -> LineSpec:
    return parse_line(textwrap.dedent(text), filename=FILE, **kwargs)


def problems(text: str, **kwargs: Any) -> list[Problem]:
    with pytest.raises(LineFileError) as info:
        parse(text, **kwargs)
    return info.value.problems


def only(text: str, **kwargs: Any) -> Problem:
    """The one problem ``text`` has (fails if it has another number of problems)."""
    found = problems(text, **kwargs)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def two_station(m1: str = "process_time: 30", m2: str = "process_time: 20") -> str:
    """A valid two-station line; ``m1``/``m2`` are the stations' extra lines (lines 4 and 6)."""
    return (
        "line: t\n"
        "stations:\n"
        "  - id: m1\n"
        f"    {m1}\n"
        "  - id: m2\n"
        f"    {m2}\n"
        "buffers:\n"
        "  - {id: b1, from: m1, to: m2, capacity: 3}\n"
    )


# -- accepted forms ----------------------------------------------------------------------------


def test_verbatim_form_parses_to_the_documented_values() -> None:
    spec = parse(VERBATIM)
    assert spec.name == "two-station"
    assert spec.path == FILE
    m1, m2 = spec.stations
    assert m1.id == "m1"
    assert m1.process_time == Distribution.deterministic(30)
    assert m1.servers == 1
    assert m1.scrap_rate == 0.0
    assert m1.failures is not None
    assert (m1.failures.mtbf, m1.failures.mttr, m1.failures.mode) == (
        3600.0,
        300.0,
        FailureMode.OPERATION,
    )
    assert m1.line == 3
    assert m2.id == "m2"
    assert m2.process_time.kind is DistKind.EXPONENTIAL
    assert m2.process_time.mean == 28.0
    assert m2.servers == 2
    assert m2.scrap_rate == 0.01
    assert m2.failures is None
    assert m2.line == 7
    (b1,) = spec.buffers
    assert (b1.id, b1.source, b1.target, b1.capacity, b1.conveyor) == ("b1", "m1", "m2", 5, None)
    assert b1.line == 12
    assert spec.sources == ()
    assert spec.is_saturated("m1") and not spec.is_saturated("m2")


def test_defaults_of_a_minimal_station() -> None:
    spec = parse("line: one\nstations:\n  - {id: m, process_time: 5}\n")
    (m,) = spec.stations
    assert m.type == "machine"
    assert m.servers == 1
    assert m.scrap_rate == 0.0
    assert m.failures is None
    assert m.routing is RoutingPolicy.ROUND_ROBIN
    assert m.weights == ()
    assert m.pose.position == (0.0, 0.0, 0.0)
    assert m.pose.yaw_deg == 0.0
    assert m.geometry.box == (1.5, 1.5, 1.5)
    assert m.geometry.mesh is None
    assert m.geometry.scale == 1.0
    assert m.geometry.color is None
    assert m.tags == ()
    assert m.robot is None
    assert spec.description == ""
    assert spec.buffers == ()


def test_default_positions_are_spaced_4_m_along_x_by_index() -> None:
    spec = parse(
        """\
        line: t
        stations:
          - {id: a, process_time: 1}
          - {id: b, process_time: 1, position: [1, 2, 3], yaw_deg: 90}
          - {id: c, process_time: 1}
        buffers:
          - {id: ab, from: a, to: b, capacity: 1}
          - {id: bc, from: b, to: c, capacity: 1}
        """
    )
    assert [s.pose.position for s in spec.stations] == [(0, 0, 0), (1, 2, 3), (8, 0, 0)]
    assert [s.pose.yaw_deg for s in spec.stations] == [0, 90, 0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.5", Distribution(kind=DistKind.DETERMINISTIC, mean=12.5)),
        ("{dist: deterministic, value: 7}", Distribution(kind=DistKind.DETERMINISTIC, mean=7.0)),
        ("{dist: exponential, mean: 28}", Distribution(kind=DistKind.EXPONENTIAL, mean=28, cv=1)),
        (
            "{dist: lognormal, mean: 30, cv: 0.25}",
            Distribution(kind=DistKind.LOGNORMAL, mean=30, cv=0.25),
        ),
        (
            "{dist: uniform, low: 10, high: 20}",
            Distribution(kind=DistKind.UNIFORM, mean=15, low=10, high=20),
        ),
        ("{dist: gamma, mean: 40, cv: 0.5}", Distribution(kind=DistKind.GAMMA, mean=40, cv=0.5)),
        (
            "{dist: empirical, values: [10, 20, 30, 0]}",
            Distribution(kind=DistKind.EMPIRICAL, mean=15, values=(10.0, 20.0, 30.0, 0.0)),
        ),
        ("1.5e1", Distribution(kind=DistKind.DETERMINISTIC, mean=15.0)),
        ("2e1", Distribution(kind=DistKind.DETERMINISTIC, mean=20.0)),  # YAML 1.2 float
    ],
)
def test_every_distribution_form(text: str, expected: Distribution) -> None:
    spec = parse(f"line: t\nstations:\n  - id: m\n    process_time: {text}\n")
    assert spec.stations[0].process_time == expected


def test_distribution_variances() -> None:
    assert Distribution.exponential(4).variance == 16
    assert Distribution(kind=DistKind.UNIFORM, mean=15, low=10, high=20).variance == 100 / 12
    assert Distribution(kind=DistKind.GAMMA, mean=40, cv=0.5).variance == 400


def test_block_style_distribution_and_failure_mode_time() -> None:
    spec = parse(
        two_station(
            m1="process_time:\n      dist: lognormal\n      mean: 30\n      cv: 0.2",
            m2="failures: {mtbf: 600, mttr: 60, mode: time}\n    process_time: 1",
        )
    )
    assert spec.stations[0].process_time == Distribution(kind=DistKind.LOGNORMAL, mean=30, cv=0.2)
    failures = spec.stations[1].failures
    assert failures is not None and failures.mode is FailureMode.TIME
    assert failures.availability == pytest.approx(600 / 660)


def test_conveyor_capacity_defaults_to_floor_of_length_over_pitch() -> None:
    spec = parse(
        """\
        line: t
        stations:
          - {id: a, process_time: 1}
          - {id: b, process_time: 1}
          - {id: c, process_time: 1}
          - {id: d, process_time: 1}
        buffers:
          - id: ab
            from: a
            to: b
            conveyor: {length: 5.9, speed: 0.5, pitch: 0.5, width: 0.4,
                       path: [[0, 0, 1], [3, 0, 1], [3, 2.9, 1]]}
          - {id: bc, from: b, to: c, conveyor: {length: 3, speed: 1}}
          - {id: cd, from: c, to: d, capacity: 2, conveyor: {length: 3, speed: 1.5}}
        """
    )
    ab, bc, cd = spec.buffers
    assert ab.conveyor is not None and bc.conveyor is not None and cd.conveyor is not None
    assert ab.capacity == 11  # floor(5.9 / 0.5)
    assert ab.conveyor.width == 0.4
    assert ab.conveyor.path == ((0, 0, 1), (3, 0, 1), (3, 2.9, 1))
    assert ab.transit_time == pytest.approx(11.8)
    assert bc.capacity == 6  # default pitch 0.5 m
    assert (bc.conveyor.pitch, bc.conveyor.width, bc.conveyor.path) == (0.5, 0.6, ())
    assert cd.capacity == 2  # explicit capacity wins
    assert cd.transit_time == 2.0
    assert spec.outputs("b") == (bc,) and spec.inputs("b") == (ab,)


def test_routing_forms_and_weights() -> None:
    spec = parse(
        """\
        line: t
        stations:
          - id: split
            process_time: 10
            routing: {policy: probability, weights: {left: 3, right: 1}}
          - {id: l, process_time: 30}
          - {id: r, process_time: 30}
          - {id: merge, process_time: 5, routing: shortest_queue}
          - {id: s2, process_time: 1, routing: {policy: round_robin}}
        buffers:
          - {id: left, from: split, to: l, capacity: 2}
          - {id: right, from: split, to: r, capacity: 2}
          - {id: lm, from: l, to: merge, capacity: 2}
          - {id: rm, from: r, to: merge, capacity: 2}
          - {id: m2, from: merge, to: s2, capacity: 0}
        """
    )
    split, _, _, merge, s2 = spec.stations
    assert split.routing is RoutingPolicy.PROBABILITY
    assert split.weights == (("left", 3.0), ("right", 1.0))
    assert merge.routing is RoutingPolicy.SHORTEST_QUEUE and merge.weights == ()
    assert s2.routing is RoutingPolicy.ROUND_ROBIN
    assert [b.id for b in spec.inputs("merge")] == ["lm", "rm"]
    assert spec.buffers[-1].capacity == 0


def test_timed_sources_single_and_list() -> None:
    one = parse(
        "line: t\nstations:\n  - {id: m, process_time: 5}\n"
        "source: {feeds: m, interarrival: {dist: exponential, mean: 6}}\n"
    )
    assert [(s.feeds, s.interarrival) for s in one.sources] == [("m", Distribution.exponential(6))]
    assert not one.is_saturated("m")
    assert one.source_for("m") is one.sources[0]
    many = parse(
        """\
        line: t
        stations:
          - {id: a, process_time: 5}
          - {id: b, process_time: 5}
          - {id: c, process_time: 2}
        buffers:
          - {id: ac, from: a, to: c, capacity: 4}
          - {id: bc, from: b, to: c, capacity: 4}
        sources:
          - {feeds: a, interarrival: 12}
          - {feeds: b, interarrival: {dist: uniform, low: 8, high: 16}}
        """
    )
    assert [s.feeds for s in many.sources] == ["a", "b"]
    assert many.sources[1].interarrival.mean == 12.0
    assert many.source_for("c") is None


def test_a_timed_source_may_feed_a_station_on_a_loop() -> None:
    spec = parse(
        """\
        line: t
        stations:
          - {id: wash, process_time: 5}
          - {id: check, process_time: 5, routing: {policy: probability, weights: {again: 1, out: 9}}}
          - {id: pack, process_time: 5}
        buffers:
          - {id: in, from: wash, to: check, capacity: 2}
          - {id: again, from: check, to: wash, capacity: 2}
          - {id: out, from: check, to: pack, capacity: 2}
        source: {feeds: wash, interarrival: 10}
        """
    )
    assert [s.id for s in spec.stations] == ["wash", "check", "pack"]


def test_geometry_tags_and_robot(tmp_path: Path) -> None:
    import trimesh

    trimesh.creation.box(extents=[1, 2, 3]).export(tmp_path / "m.stl")
    spec = parse(
        """\
        line: t
        description: A test line.
        stations:
          - id: a
            type: filler
            process_time: 1
            box: [2, 1, 0.5]
            color: "#ff8800"
            tags:
              state: plant/a/state
              speed: {address: "ns=2;s=A.Speed", scale: 0.1, offset: -5, unit: m/s,
                      period_s: 0.5, min: 0, max: 10}
            robot: {urdf: kuka_iiwa/model.urdf, position: [0, 2, 0], yaw_deg: -90}
          - {id: b, process_time: 1, mesh: m.stl, scale: 0.001}
        buffers:
          - {id: ab, from: a, to: b, capacity: 1, tags: {level: plant/ab/level}}
        """,
        base_dir=tmp_path,
    )
    a, b = spec.stations
    assert spec.description == "A test line."
    assert a.type == "filler"
    assert a.geometry.box == (2, 1, 0.5) and a.geometry.color == "#ff8800"
    assert a.tags == (
        ("state", TagBinding(address="plant/a/state")),
        (
            "speed",
            TagBinding(
                address="ns=2;s=A.Speed",
                scale=0.1,
                offset=-5,
                unit="m/s",
                period_s=0.5,
                min=0,
                max=10,
            ),
        ),
    )
    assert a.robot is not None and a.robot.urdf == "kuka_iiwa/model.urdf"
    assert a.robot.pose.position == (0, 2, 0) and a.robot.pose.yaw_deg == -90
    assert b.geometry.mesh == str(tmp_path / "m.stl") and b.geometry.box is None
    assert b.geometry.scale == 0.001
    assert spec.buffers[0].tags == (("level", TagBinding(address="plant/ab/level")),)


def test_meshes_are_not_looked_for_when_not_asked() -> None:
    spec = parse(
        "line: t\nstations:\n  - {id: a, process_time: 1, mesh: nowhere/x.glb}\n",
        base_dir="/base",
        check_meshes=False,
    )
    assert spec.stations[0].geometry.mesh == "/base/nowhere/x.glb"


def test_load_line_reads_a_file(tmp_path: Path) -> None:
    f = tmp_path / "two.yaml"
    f.write_text(VERBATIM, encoding="utf-8")
    spec = load_line(f)
    assert spec.name == "two-station" and spec.path == str(f)


# -- problems: format and collection -------------------------------------------------------------


def test_problem_string_is_file_line_path_message() -> None:
    p = only(two_station(m1="process_time: 0"))
    assert str(p) == "line.yaml:4 stations[0].process_time: must be > 0, got 0"
    assert isinstance(LineFileError([p]), ConfigError)
    assert isinstance(LineFileError([p]), ValueError)
    assert str(Problem(file="f", line=0, path="", message="m")) == "f: m"
    assert str(Problem(file="f", line=3, path="", message="m")) == "f:3: m"


def test_every_problem_is_reported_in_line_order() -> None:
    found = problems(
        """\
        line: t
        stations:
          - id: m1
            process_time: -1
            servers: 0
          - id: m2
            process_time: {dist: gamma, mean: 5}
            scrap_rate: 1.5
        buffers:
          - {id: b1, from: m1, to: m3, capacity: -2}
        """
    )
    assert [(p.line, p.path, p.message) for p in found] == [
        (4, "stations[0].process_time", "must be > 0, got -1"),
        (5, "stations[0].servers", "must be >= 1, got 0"),
        (7, "stations[1].process_time", "missing required field 'cv'"),
        (8, "stations[1].scrap_rate", "must be < 1, got 1.5"),
        (10, "buffers[0].capacity", "must be >= 0, got -2"),
        (10, "buffers[0].to", "unknown station 'm3'"),
    ]
    assert all(p.file == FILE for p in found)


# -- problems: YAML ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("line: t\nstations:\n  - id: m1\n    process_time: [1, 2\n", 5, "expected ',' or ']'"),
        ("line: t\nstations:\n  - id: m1\n   process_time: 3\n", 4, "expected <block end>"),
        ("line: t\n\tstations: []\n", 2, "found character '\\t'"),
        ("line: t\n---\nline: u\n", 2, "expected a single document"),
        ("line: *nowhere\n", 1, "found undefined alias 'nowhere'"),
        ("line: !!python/object:os.system x\n", 1, "could not determine a constructor"),
    ],
)
def test_yaml_syntax_errors(text: str, line: int, fragment: str) -> None:
    p = only(text)
    assert (p.file, p.line, p.path) == (FILE, line, "")
    assert p.message.startswith("YAML syntax error: ")
    assert fragment in p.message


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "line: t\nstations:\n  - {id: m, process_time: 2020-13-45}\n",
            3,
            "YAML error: cannot read '2020-13-45' as timestamp: month must be in 1..12",
        ),
        (
            "line: !!int abc\n",
            1,
            "YAML error: cannot read 'abc' as int: invalid literal for int() with base 10: 'abc'",
        ),
        (
            "line: t\nstations: &s\n  - *s\n",
            2,
            "YAML error: an alias refers to its own parent",
        ),
        (
            "line: t\x00\n",
            1,
            "YAML error: unacceptable character #x0000: special characters are not allowed",
        ),
        (
            "line: t\nstations:\n  - {id: m, process_time: 1}\n  - \x07\n",
            4,
            "YAML error: unacceptable character #x0007: special characters are not allowed",
        ),
    ],
)
def test_yaml_values_that_pyyaml_cannot_build_are_located(
    text: str, line: int, message: str
) -> None:
    p = only(text)
    assert (p.line, p.path, p.message) == (line, "", message)


def test_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    p = only("\n".join(lines) + "\n")
    assert p.path == ""
    assert p.message.startswith("YAML error: the document expands to more than 200000 values")


def test_deep_nesting_is_refused() -> None:
    p = only("line: " + "[" * 5000 + "]" * 5000 + "\n")
    assert p.message == "YAML error: the document is nested too deeply"


def test_duplicate_keys() -> None:
    p = only(two_station(m2="process_time: 20\n    process_time: 25"))
    assert (p.line, p.path, p.message) == (7, "stations[1].process_time", "duplicate key")


def test_complex_keys_are_unknown_fields() -> None:
    p = only("line: t\nstations:\n  - {id: m, process_time: 1}\n? [a, b]\n: 1\n")
    assert (p.line, p.path) == (4, "<complex key>")
    assert p.message.startswith("unknown field; ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must be a mapping (a line file), got nothing"),
        ("# only a comment\n", "must be a mapping (a line file), got nothing"),
        ("- a\n- b\n", "must be a mapping (a line file), got a list"),
        ("just text\n", "must be a mapping (a line file), got a string ('just text')"),
    ],
)
def test_a_document_that_is_not_a_mapping(text: str, message: str) -> None:
    p = only(text)
    assert (p.path, p.message) == ("", message)
    assert str(p).endswith(f": {message}")


def test_load_line_reports_unreadable_files(tmp_path: Path) -> None:
    for path, message in unreadable_files(tmp_path, "line"):
        with pytest.raises(LineFileError) as info:
            load_line(path)
        (p,) = info.value.problems
        assert (p.file, p.line, p.path, p.message) == (str(path), 0, "", message)


# -- problems: fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "path", "message"),
    [
        (
            two_station(m1="proces_time: 30"),
            4,
            "stations[0].proces_time",
            "unknown field; did you mean 'process_time'?",
        ),
        (
            two_station(m1="process_time: 30\n    failures: {mtfb: 10, mtbf: 10, mttr: 1}"),
            5,
            "stations[0].failures.mtfb",
            "unknown field; did you mean 'mtbf'?",
        ),
        (
            two_station(m2="process_time: {dist: exponential, mean: 3, cv: 1}"),
            6,
            "stations[1].process_time.cv",
            "unknown field; allowed: dist, mean",
        ),
        (
            two_station() + "buffer: []\n",
            9,
            "buffer",
            "unknown field; did you mean 'buffers'?",
        ),
        (
            two_station() + "colour: red\n",
            9,
            "colour",
            "unknown field; allowed: line, description, stations, buffers, source, sources",
        ),
        (
            two_station(m1="process_time: 30\n    colour: red"),
            5,
            "stations[0].colour",
            "unknown field; did you mean 'color'?",
        ),
        (
            two_station(m1="process_time: {dist: exponentail, mean: 3}"),
            4,
            "stations[0].process_time.dist",
            "must be one of deterministic, exponential, lognormal, uniform, gamma, empirical, "
            "got 'exponentail'; did you mean 'exponential'?",
        ),
        (
            two_station(m1="process_time: 30\n    failures: {mtbf: 10, mttr: 1, mode: busy}"),
            5,
            "stations[0].failures.mode",
            "must be one of operation, time, got 'busy'",
        ),
        (
            two_station(m1="process_time: 30\n    routing: shortest"),
            5,
            "stations[0].routing",
            "must be one of round_robin, shortest_queue, probability, got 'shortest'; "
            "did you mean 'shortest_queue'?",
        ),
    ],
)
def test_unknown_fields_and_values_suggest_the_closest(
    text: str, line: int, path: str, message: str
) -> None:
    p = only(text)
    assert (p.file, p.line, p.path, p.message) == (FILE, line, path, message)


@pytest.mark.parametrize(
    ("m1", "path", "message"),
    [
        (
            "process_time: fast",
            "process_time",
            "must be a number of seconds or a distribution mapping, got a string ('fast')",
        ),
        (
            "process_time: true",
            "process_time",
            "must be a number of seconds or a distribution mapping, got a boolean (true)",
        ),
        (
            "process_time: [1, 2]",
            "process_time",
            "must be a number of seconds or a distribution mapping, got a list",
        ),
        (
            "process_time: {mean: 3}",
            "process_time",
            "missing required field 'dist' (deterministic, exponential, lognormal, uniform, gamma, "
            "empirical)",
        ),
        (
            "process_time: {dist: exponential, mean: '3'}",
            "process_time.mean",
            "must be a number, got a string ('3')",
        ),
        (
            "process_time: {dist: exponential, mean: null}",
            "process_time.mean",
            "must be a number, got nothing",
        ),
        (
            "process_time: {dist: empirical, values: 3}",
            "process_time.values",
            "must be a non-empty list of numbers, got a number (3)",
        ),
        (
            "process_time: {dist: empirical, values: [1, x]}",
            "process_time.values[1]",
            "must be a number, got a string ('x')",
        ),
        (
            "process_time: 1\n    servers: two",
            "servers",
            "must be a whole number, got a string ('two')",
        ),
        (
            "process_time: 1\n    servers: 1.5",
            "servers",
            "must be a whole number, got a number (1.5)",
        ),
        (
            "process_time: 1\n    servers: true",
            "servers",
            "must be a whole number, got a boolean (true)",
        ),
        (
            "process_time: 1\n    scrap_rate: '1%'",
            "scrap_rate",
            "must be a number, got a string ('1%')",
        ),
        (
            "process_time: 1\n    failures: 3600",
            "failures",
            "must be a mapping (mtbf, mttr, mode), got a number (3600)",
        ),
        ("process_time: 1\n    failures: {mttr: 5}", "failures", "missing required field 'mtbf'"),
        (
            "process_time: 1\n    position: [1, 2]",
            "position",
            "must be a list of 3 numbers, got a list of 2",
        ),
        (
            "process_time: 1\n    position: here",
            "position",
            "must be a list of 3 numbers, got a string ('here')",
        ),
        (
            "process_time: 1\n    position: [1, 2, z]",
            "position[2]",
            "must be a number, got a string ('z')",
        ),
        ("process_time: 1\n    position: [1, 2, .inf]", "position[2]", "must be a finite number"),
        (
            "process_time: 1\n    yaw_deg: north",
            "yaw_deg",
            "must be a number, got a string ('north')",
        ),
        ("process_time: 1\n    box: [1, 0, 1]", "box[1]", "must be > 0, got 0"),
        ("process_time: 1\n    color: 7", "color", "must be a non-empty string, got a number (7)"),
        (
            "process_time: 1\n    type: 'fill er'",
            "type",
            "'fill er' is not a valid id (letters, digits, '_' or '-')",
        ),
        (
            "process_time: 1\n    tags: plant/a",
            "tags",
            "must be a mapping of tag name to address, got a string ('plant/a')",
        ),
        ("process_time: 1\n    tags: {state: ''}", "tags.state", "must be a non-empty address"),
        (
            "process_time: 1\n    tags: {state: {unit: s}}",
            "tags.state",
            "missing required field 'address'",
        ),
        (
            "process_time: 1\n    tags: {s: {address: a, min: 5, max: 1}}",
            "tags.s.max",
            "must be >= min (5), got 1",
        ),
        (
            "process_time: 1\n    tags: {s: {address: a, period_s: 0}}",
            "tags.s.period_s",
            "must be > 0, got 0",
        ),
        (
            "process_time: 1\n    robot: kuka",
            "robot",
            "must be a mapping (urdf, position, yaw_deg), got a string ('kuka')",
        ),
        (
            "process_time: 1\n    robot: {position: [0, 0, 0]}",
            "robot",
            "missing required field 'urdf'",
        ),
        (
            "process_time: 1\n    box: [1, 1, 1]\n    mesh: a.stl",
            "mesh",
            "give either 'box' or 'mesh', not both",
        ),
        (
            "process_time: 1\n    mesh: model.blend",
            "mesh",
            "unsupported mesh format '.blend' (use .glb, .gltf, .obj, .ply, .stl)",
        ),
    ],
)
def test_wrong_types_and_shapes(m1: str, path: str, message: str) -> None:
    p = only(two_station(m1=m1), check_meshes=False)
    assert p.path == f"stations[0].{path}"
    assert p.message == message
    # The line is that of the field (the first line of the station's fields is line 4).
    field_line = 4 + m1.count("\n") if "\n" in m1 else 4
    assert p.line == field_line


@pytest.mark.parametrize(
    ("m1", "path", "message"),
    [
        ("process_time: 0", "process_time", "must be > 0, got 0"),
        ("process_time: -30", "process_time", "must be > 0, got -30"),
        (
            "process_time: {dist: deterministic, value: 0}",
            "process_time.value",
            "must be > 0, got 0",
        ),
        ("process_time: {dist: exponential, mean: -1}", "process_time.mean", "must be > 0, got -1"),
        (
            "process_time: {dist: lognormal, mean: 0, cv: 0.5}",
            "process_time.mean",
            "must be > 0, got 0",
        ),
        (
            "process_time: {dist: lognormal, mean: 3, cv: 0}",
            "process_time.cv",
            "must be > 0, got 0",
        ),
        (
            "process_time: {dist: gamma, mean: 3, cv: 11}",
            "process_time.cv",
            "must be <= 10, got 11",
        ),
        (
            "process_time: {dist: gamma, mean: -3, cv: 1}",
            "process_time.mean",
            "must be > 0, got -3",
        ),
        (
            "process_time: {dist: uniform, low: -1, high: 2}",
            "process_time.low",
            "must be >= 0, got -1",
        ),
        (
            "process_time: {dist: uniform, low: 5, high: 5}",
            "process_time.high",
            "must be > low (5), got 5",
        ),
        (
            "process_time: {dist: empirical, values: [1, -2]}",
            "process_time.values[1]",
            "must be >= 0, got -2",
        ),
        (
            "process_time: {dist: empirical, values: [0, 0]}",
            "process_time.values",
            "must have a mean > 0",
        ),
        (
            "process_time: {dist: empirical, values: []}",
            "process_time.values",
            "must be a non-empty list of numbers, got a list",
        ),
        ("process_time: .nan", "process_time", "must be a finite number"),
        ("process_time: " + "9" * 400, "process_time", "must be a finite number"),
        (
            "process_time: 1\n    failures: {mtbf: 0, mttr: 60}",
            "failures.mtbf",
            "must be > 0, got 0",
        ),
        (
            "process_time: 1\n    failures: {mtbf: -3600, mttr: 60}",
            "failures.mtbf",
            "must be > 0, got -3600",
        ),
        (
            "process_time: 1\n    failures: {mtbf: 3600, mttr: 0}",
            "failures.mttr",
            "must be > 0, got 0",
        ),
        (
            "process_time: 1\n    failures: {mtbf: 3600, mttr: -5}",
            "failures.mttr",
            "must be > 0, got -5",
        ),
        ("process_time: 1\n    scrap_rate: -0.1", "scrap_rate", "must be >= 0, got -0.1"),
        ("process_time: 1\n    scrap_rate: 1", "scrap_rate", "must be < 1, got 1"),
        ("process_time: 1\n    servers: 0", "servers", "must be >= 1, got 0"),
        ("process_time: 1\n    scale: 0", "scale", "must be > 0, got 0"),
    ],
)
def test_negative_or_zero_times_and_out_of_range_numbers(m1: str, path: str, message: str) -> None:
    p = only(two_station(m1=m1))
    assert (p.line, p.path, p.message) == (4 + m1.count("\n"), f"stations[0].{path}", message)


def test_missing_required_fields() -> None:
    found = problems("description: no name\nstations:\n  - {process_time: 3}\n  - {id: m2}\n")
    assert [(p.line, p.path, p.message) for p in found] == [
        (1, "", "missing required field 'line'"),
        (3, "stations[0]", "missing required field 'id'"),
        (4, "stations[1]", "missing required field 'process_time'"),
    ]
    assert str(found[0]) == "line.yaml:1: missing required field 'line'"
    assert only("line: t\n").message == "missing required field 'stations'"
    p = only("line: t\nstations: []\n")
    assert (p.line, p.path, p.message) == (
        2,
        "stations",
        "must be a non-empty list of stations, got a list",
    )
    p = only("line: 5\nstations:\n  - {id: m, process_time: 1}\n")
    assert (p.line, p.path, p.message) == (
        1,
        "line",
        "must be a non-empty string, got a number (5)",
    )
    p = only("line: t\ndescription: [a]\nstations:\n  - {id: m, process_time: 1}\n")
    assert (p.line, p.path, p.message) == (2, "description", "must be a string, got a list")


@pytest.mark.parametrize(
    ("ident", "message"),
    [
        ("'m 1'", "'m 1' is not a valid id (letters, digits, '_' or '-')"),
        ('"m1\\n"', "'m1\\n' is not a valid id (letters, digits, '_' or '-')"),
        ("m.1", "'m.1' is not a valid id (letters, digits, '_' or '-')"),
        ("7", "must be a non-empty string, got a number (7)"),
        ("''", "must be a non-empty string, got a string ('')"),
    ],
)
def test_invalid_ids(ident: str, message: str) -> None:
    p = only(f"line: t\nstations:\n  - id: {ident}\n    process_time: 1\n")
    assert (p.line, p.path, p.message) == (3, "stations[0].id", message)


# -- problems: ids and references -----------------------------------------------------------------


def test_duplicate_station_and_buffer_ids() -> None:
    found = problems(
        """\
        line: t
        stations:
          - {id: m1, process_time: 1}
          - {id: m2, process_time: 1}
          - {id: m1, process_time: 1}
        buffers:
          - {id: b1, from: m1, to: m2, capacity: 1}
          - {id: b1, from: m1, to: m2, capacity: 1}
          - {id: m2, from: m1, to: m2, capacity: 1}
        """
    )
    assert [(p.line, p.path, p.message) for p in found] == [
        (5, "stations[2].id", "duplicate id 'm1' (first used at stations[0])"),
        (8, "buffers[1].id", "duplicate id 'b1' (first used at buffers[0])"),
        (9, "buffers[2].id", "id 'm2' is already a station id"),
    ]


def test_buffers_naming_unknown_stations() -> None:
    found = problems(
        """\
        line: t
        stations:
          - {id: filler, process_time: 1}
          - {id: capper, process_time: 1}
        buffers:
          - id: b1
            from: filer
            to: labeller
            capacity: 2
          - {id: b2, from: capper, to: capper, capacity: 2}
        """
    )
    assert [(p.line, p.path, p.message) for p in found] == [
        (7, "buffers[0].from", "unknown station 'filer'; did you mean 'filler'?"),
        (8, "buffers[0].to", "unknown station 'labeller'"),
        (10, "buffers[1].to", "a buffer cannot lead from a station back to itself"),
    ]


@pytest.mark.parametrize(
    ("buffer", "path", "message"),
    [
        ("{id: b1, from: m1, to: m2}", "buffers[0]", "missing required field 'capacity'"),
        ("{id: b1, to: m2, capacity: 1}", "buffers[0]", "missing required field 'from'"),
        ("{from: m1, to: m2, capacity: 1}", "buffers[0]", "missing required field 'id'"),
        (
            "{id: b1, from: m1, to: m2, capacity: 2.5}",
            "buffers[0].capacity",
            "must be a whole number, got a number (2.5)",
        ),
        (
            "{id: b1, from: m1, to: m2, capacity: 1, size: 2}",
            "buffers[0].size",
            "unknown field; allowed: id, from, to, capacity, conveyor, tags",
        ),
        (
            "{id: b1, from: m1, to: m2, conveyor: {length: 4}}",
            "buffers[0].conveyor",
            "missing required field 'speed'",
        ),
        (
            "{id: b1, from: m1, to: m2, conveyor: {length: 0, speed: 1}}",
            "buffers[0].conveyor.length",
            "must be > 0, got 0",
        ),
        (
            "{id: b1, from: m1, to: m2, conveyor: {length: 4, speed: -1}}",
            "buffers[0].conveyor.speed",
            "must be > 0, got -1",
        ),
        (
            "{id: b1, from: m1, to: m2, conveyor: {length: 1, speed: 1, pitch: 2}}",
            "buffers[0].conveyor.pitch",
            "must be <= length (1), got 2",
        ),
        (
            "{id: b1, from: m1, to: m2, capacity: 0, conveyor: {length: 1, speed: 1}}",
            "buffers[0].capacity",
            "a conveyor holds at least one part (>= 1)",
        ),
        (
            "{id: b1, from: m1, to: m2, conveyor: {length: 1, speed: 1, path: [[0, 0, 0]]}}",
            "buffers[0].conveyor.path",
            "must be a list of at least two [x, y, z] points",
        ),
        (
            "{id: b1, from: m1, to: m2, conveyor: {length: 1, speed: 1, path: [[0, 0, 0], [1, 0]]}}",
            "buffers[0].conveyor.path[1]",
            "must be a list of 3 numbers, got a list of 2",
        ),
        (
            "{id: b1, from: m1, to: m2, conveyor: {length: 1, speed: 1, belt: 2}}",
            "buffers[0].conveyor.belt",
            "unknown field; allowed: length, speed, pitch, width, path",
        ),
        (
            "{id: b1, from: m1, to: m2, conveyor: fast}",
            "buffers[0].conveyor",
            "must be a mapping (length, speed, pitch, width, path), got a string ('fast')",
        ),
        ("[m1, m2]", "buffers[0]", "must be a mapping (a buffer), got a list"),
    ],
)
def test_buffer_problems(buffer: str, path: str, message: str) -> None:
    text = f"line: t\nstations:\n  - {{id: m1, process_time: 1}}\n  - {{id: m2, process_time: 1}}\nbuffers:\n  - {buffer}\n"
    p = only(text)
    assert (p.line, p.path, p.message) == (6, path, message)


@pytest.mark.parametrize(
    ("routing", "path", "message"),
    [
        (
            "probability",
            "stations[0].routing",
            "policy 'probability' needs weights: {BUFFER_ID: weight, ...}",
        ),
        (
            "{policy: probability, weights: {ab: 1}}",
            "stations[0].routing.weights",
            "no weight for outgoing buffer(s) ac",
        ),
        (
            "{policy: probability, weights: {ab: 1, ac: 1, bc: 1}}",
            "stations[0].routing.weights.bc",
            "'bc' is not an outgoing buffer of this station (ab, ac)",
        ),
        (
            "{policy: probability, weights: {ab: 1, ac: -1}}",
            "stations[0].routing.weights.ac",
            "must be >= 0, got -1",
        ),
        (
            "{policy: probability, weights: {ab: 0, ac: 0}}",
            "stations[0].routing.weights",
            "weights must not all be zero",
        ),
        (
            "{policy: probability, weights: [1, 2]}",
            "stations[0].routing.weights",
            "must be a mapping of outgoing buffer id to weight, got a list",
        ),
        (
            "{policy: round_robin, weights: {ab: 1, ac: 1}}",
            "stations[0].routing.weights",
            "weights are only used with policy 'probability'",
        ),
        ("{weights: {ab: 1, ac: 1}}", "stations[0].routing", "missing required field 'policy'"),
        (
            "{policy: random}",
            "stations[0].routing.policy",
            "must be one of round_robin, shortest_queue, probability, got 'random'",
        ),
        ("3", "stations[0].routing", "must be a mapping (policy, weights), got a number (3)"),
    ],
)
def test_routing_problems(routing: str, path: str, message: str) -> None:
    text = (
        "line: t\n"
        "stations:\n"
        f"  - {{id: a, process_time: 1, routing: {routing}}}\n"
        "  - {id: b, process_time: 1}\n"
        "  - {id: c, process_time: 1}\n"
        "buffers:\n"
        "  - {id: ab, from: a, to: b, capacity: 1}\n"
        "  - {id: ac, from: a, to: c, capacity: 1}\n"
    )
    p = only(text)
    assert (p.line, p.path, p.message) == (3, path, message)


@pytest.mark.parametrize(
    ("sources", "line", "path", "message"),
    [
        ("source: {feeds: x, interarrival: 5}", 4, "source.feeds", "unknown station 'x'"),
        ("source: {feeds: m, interarrival: 0}", 4, "source.interarrival", "must be > 0, got 0"),
        ("source: {feeds: m}", 4, "source", "missing required field 'interarrival'"),
        (
            "source: {feeds: m, interarival: 5}",
            4,
            "source.interarival",
            "unknown field; did you mean 'interarrival'?",
        ),
        (
            "sources: {feeds: m, interarrival: 5}",
            4,
            "sources",
            "must be a list of sources, got a mapping",
        ),
        (
            "sources:\n  - {feeds: m, interarrival: 5}\n  - {feeds: m, interarrival: 7}",
            6,
            "sources[1].feeds",
            "station 'm' already has a source",
        ),
        (
            "source: {feeds: m, interarrival: 5}\nsources: []",
            5,
            "sources",
            "give either 'source' or 'sources', not both",
        ),
    ],
)
def test_source_problems(sources: str, line: int, path: str, message: str) -> None:
    p = only(f"line: t\nstations:\n  - {{id: m, process_time: 1}}\n{sources}\n")
    assert (p.line, p.path, p.message) == (line, path, message)


# -- problems: topology ----------------------------------------------------------------------------


def test_cycles_without_a_way_out() -> None:
    found = problems(
        """\
        line: t
        stations:
          - {id: m1, process_time: 1}
          - {id: m2, process_time: 1}
          - {id: m3, process_time: 1}
        buffers:
          - {id: b12, from: m1, to: m2, capacity: 1}
          - {id: b23, from: m2, to: m3, capacity: 1}
          - {id: b32, from: m3, to: m2, capacity: 1}
        """
    )
    assert [(p.line, p.path, p.message) for p in found] == [
        (
            3,
            "stations[0].id",
            "station 'm1' is on a cycle without a way out: parts can never reach the sink",
        ),
        (
            4,
            "stations[1].id",
            "station 'm2' is on a cycle without a way out: parts can never reach the sink",
        ),
        (
            5,
            "stations[2].id",
            "station 'm3' is on a cycle without a way out: parts can never reach the sink",
        ),
    ]


def test_unreachable_stations() -> None:
    found = problems(
        """\
        line: t
        stations:
          - {id: m1, process_time: 1}
          - {id: m2, process_time: 1}
          - {id: m3, process_time: 1}
          - {id: m4, process_time: 1}
        buffers:
          - {id: b12, from: m1, to: m2, capacity: 1}
          - {id: b34, from: m3, to: m4, capacity: 1}
          - {id: b43, from: m4, to: m3, capacity: 1}
          - {id: b42, from: m4, to: m2, capacity: 1}
        """
    )
    assert [(p.line, p.path, p.message) for p in found] == [
        (
            5,
            "stations[2].id",
            "station 'm3' is unreachable: no source feeds it and no path leads to it from one",
        ),
        (
            6,
            "stations[3].id",
            "station 'm4' is unreachable: no source feeds it and no path leads to it from one",
        ),
    ]


def test_topology_is_checked_only_once_the_fields_are_valid() -> None:
    # The cycle m2 <-> m3 is not reported while a field problem remains.
    found = problems(
        """\
        line: t
        stations:
          - {id: m1, process_time: 0}
          - {id: m2, process_time: 1}
          - {id: m3, process_time: 1}
        buffers:
          - {id: b12, from: m1, to: m2, capacity: 1}
          - {id: b23, from: m2, to: m3, capacity: 1}
          - {id: b32, from: m3, to: m2, capacity: 1}
        """
    )
    assert [p.path for p in found] == ["stations[0].process_time"]


# -- problems: meshes ----------------------------------------------------------------------------


def test_missing_mesh_file(tmp_path: Path) -> None:
    p = only(two_station(m1="process_time: 1\n    mesh: meshes/gone.glb"), base_dir=tmp_path)
    assert (p.file, p.line, p.path) == (FILE, 5, "stations[0].mesh")
    assert p.message == f"mesh file not found: {tmp_path / 'meshes' / 'gone.glb'}"


def test_mesh_file_that_does_not_load(tmp_path: Path) -> None:
    (tmp_path / "bad.stl").write_bytes(b"this is not an STL file\n" * 4)
    f = tmp_path / "line.yaml"
    f.write_text(two_station(m2="process_time: 1\n    mesh: bad.stl"), encoding="utf-8")
    with pytest.raises(LineFileError) as info:
        load_line(f)
    (p,) = info.value.problems
    assert (p.file, p.line, p.path) == (str(f), 7, "stations[1].mesh")
    assert p.message == "mesh does not load: bad.stl: no triangles found"
    assert str(p) == f"{f}:7 stations[1].mesh: mesh does not load: bad.stl: no triangles found"


# -- the command line ------------------------------------------------------------------------------


def test_twin_validate_reports_problems_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "line: t\nstations:\n  - id: m1\n    process_time: -1\n  - id: m2\n    proces_time: 3\n"
        "buffers:\n  - {id: b, from: m1, to: m9, capacity: 1}\n",
        encoding="utf-8",
    )
    good = tmp_path / "good.yaml"
    good.write_text(VERBATIM, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "twin", "validate", str(good), str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{bad}:4 stations[0].process_time: must be > 0, got -1",
        f"{bad}:6 stations[1].proces_time: unknown field; did you mean 'process_time'?",
        f"{bad}:8 buffers[0].to: unknown station 'm9'",
    ]
    assert result.stdout.splitlines() == [
        f"{good}: ok: line 'two-station', 2 stations, 1 buffer(s) (0 conveyors), 0 timed sources"
    ]


def test_twin_validate_on_a_yaml_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("line: t\nstations: [\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "twin", "validate", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{bad}:3: YAML syntax error: ")


# -- properties ----------------------------------------------------------------------------------

IDS = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,7}", fullmatch=True)
TIMES = st.floats(min_value=0.01, max_value=1e5, allow_nan=False, allow_infinity=False)
DISTS = st.one_of(
    TIMES,
    st.builds(lambda v: {"dist": "deterministic", "value": v}, TIMES),
    st.builds(lambda m: {"dist": "exponential", "mean": m}, TIMES),
    st.builds(
        lambda d, m, c: {"dist": d, "mean": m, "cv": c},
        st.sampled_from(["lognormal", "gamma"]),
        TIMES,
        st.floats(min_value=0.01, max_value=10),
    ),
    st.builds(
        lambda lo, w: {"dist": "uniform", "low": lo, "high": lo + w},
        st.floats(min_value=0, max_value=1e4),
        st.floats(min_value=0.01, max_value=1e4),
    ),
    st.builds(
        lambda vs: {"dist": "empirical", "values": vs}, st.lists(TIMES, min_size=1, max_size=5)
    ),
)


@st.composite
def valid_lines(draw: st.DrawFn) -> dict[str, Any]:
    """A random valid line: a tree of stations, each fed by an earlier one (or saturated)."""
    # buffers are named b0, b1, ...: station ids must not take those names (ids share one space)
    ids = draw(
        st.lists(
            IDS.filter(lambda i: re.fullmatch(r"b\d+", i) is None),
            min_size=1,
            max_size=8,
            unique=True,
        )
    )
    stations: list[dict[str, Any]] = []
    for sid in ids:
        s: dict[str, Any] = {"id": sid, "process_time": draw(DISTS)}
        if draw(st.booleans()):
            s["servers"] = draw(st.integers(min_value=1, max_value=5))
        if draw(st.booleans()):
            s["scrap_rate"] = draw(st.floats(min_value=0, max_value=0.99))
        if draw(st.booleans()):
            s["failures"] = {
                "mtbf": draw(TIMES),
                "mttr": draw(TIMES),
                "mode": draw(st.sampled_from(["operation", "time"])),
            }
        stations.append(s)
    buffers: list[dict[str, Any]] = []
    for j in range(1, len(ids)):
        if draw(st.booleans()):
            i = draw(st.integers(min_value=0, max_value=j - 1))
            b: dict[str, Any] = {"id": f"b{len(buffers)}", "from": ids[i], "to": ids[j]}
            if draw(st.booleans()):
                b["capacity"] = draw(st.integers(min_value=0, max_value=50))
            else:
                length = draw(st.floats(min_value=0.5, max_value=50))
                b["conveyor"] = {"length": length, "speed": draw(TIMES)}
            buffers.append(b)
    return {"line": draw(IDS), "stations": stations, "buffers": buffers}


@settings(max_examples=150, deadline=None)
@given(valid_lines())
def test_valid_lines_round_trip(raw: dict[str, Any]) -> None:
    spec = parse_line(yaml.safe_dump(raw, sort_keys=False), filename=FILE)
    assert spec.name == raw["line"]
    assert [s.id for s in spec.stations] == [s["id"] for s in raw["stations"]]
    assert [(b.id, b.source, b.target) for b in spec.buffers] == [
        (b["id"], b["from"], b["to"]) for b in raw["buffers"]
    ]
    for s, r in zip(spec.stations, raw["stations"], strict=True):
        assert s.servers == r.get("servers", 1)
        assert s.scrap_rate == r.get("scrap_rate", 0.0)
        assert s.process_time.mean > 0 and math.isfinite(s.process_time.mean)
        if isinstance(r["process_time"], float):
            assert s.process_time.mean == r["process_time"]
        assert (s.failures is None) == ("failures" not in r)
    for b, r in zip(spec.buffers, raw["buffers"], strict=True):
        if "capacity" in r:
            assert b.capacity == r["capacity"]
        else:
            assert b.capacity == max(1, math.floor(r["conveyor"]["length"] / 0.5 + 1e-9))


FIELD_NAMES = st.sampled_from(
    [
        "line",
        "stations",
        "buffers",
        "id",
        "process_time",
        "dist",
        "mean",
        "cv",
        "values",
        "from",
        "to",
        "capacity",
        "conveyor",
        "length",
        "speed",
        "pitch",
        "path",
        "failures",
        "mtbf",
        "mttr",
        "routing",
        "policy",
        "weights",
        "source",
        "sources",
        "feeds",
        "interarrival",
        "tags",
        "address",
        "position",
        "box",
        "mesh",
        "robot",
        "urdf",
        "servers",
        "scrap_rate",
        "m1",
        "b1",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["m1", "m2", "b1", "exponential", "probability", "time", "a.stl"]),
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(FIELD_NAMES, SCALARS.filter(lambda k: k is not None)), inner, max_size=5
        ),
    ),
    max_leaves=30,
)


def _outcome(text: str) -> LineSpec | None:
    try:
        return parse_line(text, filename=FILE, check_meshes=False)
    except LineFileError as exc:
        assert exc.problems
        assert all(isinstance(p, Problem) and p.file == FILE and p.line >= 0 for p in exc.problems)
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JUNK)
def test_junk_documents_give_a_line_or_line_file_error(doc: Any) -> None:
    try:
        text = yaml.safe_dump(doc)
    except (yaml.YAMLError, ValueError):  # pragma: no cover - nothing to parse
        return
    spec = _outcome(text)
    if spec is not None:  # a valid line keeps every station
        assert len(spec.stations) == len(doc["stations"])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab1-:{}[],&*!|>'\"\n #\t.e0")), max_size=60))
def test_junk_text_gives_a_line_or_line_file_error(text: str) -> None:
    _outcome(text)


@settings(max_examples=100, deadline=None)
@given(valid_lines(), st.data())
def test_mutated_valid_lines_never_crash(raw: dict[str, Any], data: st.DataObject) -> None:
    """Replace one value anywhere in a valid line by junk: LineFileError or a line, never a crash."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))

    walk(raw, ())
    path = data.draw(st.sampled_from(paths[1:]))
    target = raw
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = data.draw(st.one_of(st.none(), JUNK))
    _outcome(yaml.safe_dump(raw, sort_keys=False))


def test_yamlpos_records_lines_of_keys_and_items() -> None:
    doc = yamlpos.load("a: 1\nb:\n  - x\n  - {c: 2,\n     d: 3}\n")
    assert doc.value == {"a": 1, "b": ["x", {"c": 2, "d": 3}]}
    assert doc.line(("a",)) == 1
    assert doc.line(("b", 1)) == 4
    assert doc.line(("b", 1, "d")) == 5
    assert doc.line(("b", 1, "d", "missing")) == 5
    assert doc.line(("nowhere",)) == 1
    assert yamlpos.format_path(("stations", 2, "failures", "mttr")) == "stations[2].failures.mttr"

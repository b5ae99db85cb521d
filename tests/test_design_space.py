"""Design-space files: parsing, located errors, applying variants, writing variants back."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import unreadable_files

from scenes.lineparse import load_line, parse_line
from twin.design import cost, generators
from twin.design.linefile import serialize_line
from twin.design.space import SpaceFileError, TargetKind, apply, load_space, parse_space

EXAMPLES = Path(__file__).resolve().parent.parent / "scenes" / "examples"

LINE = """
line: three
stations:
  - {id: a, process_time: {dist: exponential, mean: 10}, failures: {mtbf: 500, mttr: 50}}
  - {id: b, process_time: {dist: uniform, low: 8, high: 12}, routing: {policy: probability, weights: {b1: 1, b2: 1}}}
  - {id: c, process_time: 9, servers: 2, type: welder}
  - {id: d, process_time: {dist: empirical, values: [7, 9, 11]}}
buffers:
  - {id: b0, from: a, to: b, capacity: 2}
  - {id: b1, from: b, to: c, capacity: 2}
  - {id: b2, from: b, to: d, conveyor: {length: 2, speed: 0.5, pitch: 0.5}}
"""

GOOD = """
design: ok
parameters:
  - {target: buffers.b0.capacity, range: [0, 4], step: 2}
  - {name: bt, target: stations.b.process_time, range: [8, 11], levels: 2}
  - {target: stations.c.servers, values: [1, 3]}
  - {target: stations.a.failures.mtbf, values: [400, 800]}
  - {target: stations.b.routing.weights.b1, range: [0.5, 2]}
  - {target: buffers.b2.conveyor.speed, values: [0.5, 1.0]}
constraints: ["b0_capacity + c_servers <= 6", "throughput >= 1"]
objectives: [throughput, {kpi: cost, sense: min}]
cost: {machine: 1000, machine_by_type: {welder: 5000}, buffer_slot: 10}
simulation: {hours: 2, replications: 3}
"""


def line():
    return parse_line(LINE)


def test_good_space_parses_with_defaults_and_levels():
    s = parse_space(GOOD, line(), filename="s.yaml")
    assert [p.name for p in s.parameters] == [
        "b0_capacity",
        "bt",
        "c_servers",
        "a_mtbf",
        "b_b1",
        "b2_speed",
    ]
    assert s.parameter("b0_capacity").levels_of() == (0, 2, 4)
    assert s.parameter("bt").levels_of() == (8.0, 11.0)
    assert s.parameter("b_b1").levels_of() == (0.5, 1.25, 2.0)
    assert s.parameter("bt").target.kind == TargetKind.PROCESS_TIME
    assert generators.grid_size(s) == 3 * 2 * 2 * 2 * 3 * 2
    # the parameter-only constraint filters the grid; the KPI one is judged on results
    assert all(v["b0_capacity"] + v["c_servers"] <= 6 for v in generators.grid(s))
    assert [c.on_results() for c in s.constraints] == [False, True]
    assert s.simulation.hours == 2 and s.simulation.replications == 3
    assert s.cost.machine_price("welder") == 5000 and s.cost.machine_price("x") == 1000


def test_apply_sets_every_target_and_keeps_shapes():
    ln = line()
    s = parse_space(GOOD, ln)
    v = {
        "b0_capacity": 0,
        "bt": 11.0,
        "c_servers": 3,
        "a_mtbf": 800.0,
        "b_b1": 2.0,
        "b2_speed": 1.0,
    }
    out = apply(ln, s, v)
    b = out.station("b")
    assert (b.process_time.low, b.process_time.high, b.process_time.mean) == pytest.approx(
        (8 * 1.1, 12 * 1.1, 11.0)
    )
    assert dict(b.weights) == {"b1": 2.0, "b2": 1.0}
    assert out.station("c").servers == 3
    assert out.station("a").failures.mtbf == 800.0
    assert out.buffers[0].capacity == 0
    assert out.buffers[2].conveyor.speed == 1.0
    assert ln.buffers[0].capacity == 2  # the base line is unchanged


def test_variant_written_as_a_line_file_parses_back_equal(tmp_path):
    ln = line()
    s = parse_space(GOOD, ln)
    v = dict(s.base_values(ln), b0_capacity=4, bt=9.5, c_servers=1)
    spec = apply(ln, s, v)
    text = serialize_line(spec, header="variant 3\nof a test")
    assert text.startswith("# variant 3\n# of a test\n")
    back = parse_line(text, filename="v.yaml")

    def strip(sp):
        return [(x.id, x.process_time, x.servers, x.failures, x.weights) for x in sp.stations]

    assert strip(back) == strip(spec)
    assert [(b.id, b.capacity, b.conveyor) for b in back.buffers] == [
        (b.id, b.capacity, b.conveyor) for b in spec.buffers
    ]


@pytest.mark.parametrize("name", ["bottling", "biw_welding", "smt"])
def test_example_spaces_parse_and_round_trip(name, tmp_path):
    ln = load_line(EXAMPLES / f"{name}.yaml")
    from twin.design.space import load_space

    s = load_space(EXAMPLES / f"{name}.space.yaml", ln)
    v = generators.lhs(s, 1, __import__("numpy").random.default_rng(0))[0]
    spec = apply(ln, s, v)
    p = tmp_path / "v.yaml"
    p.write_text(serialize_line(spec))
    back = load_line(p)
    assert [st.process_time for st in back.stations] == [st.process_time for st in spec.stations]
    assert [b.capacity for b in back.buffers] == [b.capacity for b in spec.buffers]
    assert cost.cost(s.cost, spec, ln) > 0


BAD = [
    ("parameters: []\nobjectives: [throughput]\n", "s.yaml:1: missing required field 'design'"),
    (
        "design: x\nparameters:\n  - {target: stations.zz.servers, values: [1]}\nobjectives: [throughput]\n",
        "s.yaml:3 parameters[0].target: unknown station 'zz'",
    ),
    (
        "design: x\nparameters:\n  - {target: buffers.b0.capacity, range: [3, 1]}\nobjectives: [throughput]\n",
        "s.yaml:3 parameters[0].range[1]: must be >= low (3), got 1",
    ),
    (
        "design: x\nparameters:\n  - {target: stations.a.servers, values: [0, 2]}\nobjectives: [throughput]\n",
        "s.yaml:3 parameters[0].values[0]: must be >= 1, got 0",
    ),
    (
        "design: x\nparameters:\n  - {target: buffers.b2.capacity, range: [0, 3]}\nobjectives: [throughput]\n",
        "s.yaml:3 parameters[0].range[0]: must be >= 1, got 0",
    ),
    (
        "design: x\nparameters:\n  - {target: buffers.b0.conveyor.speed, values: [1]}\nobjectives: [throughput]\n",
        "s.yaml:3 parameters[0].target: buffer 'b0' has no conveyor",
    ),
    (
        "design: x\nparameters:\n  - {target: stations.c.failures.mttr, values: [1]}\nobjectives: [throughput]\n",
        "s.yaml:3 parameters[0].target: station 'c' has no failures to vary",
    ),
    (
        "design: x\nparameters:\n  - {target: stations.a.proces_time, values: [1]}\nobjectives: [throughput]\n",
        "s.yaml:3 parameters[0].target: unknown target 'stations.a.proces_time'",
    ),
    (
        "design: x\nparameters:\n  - {target: stations.a.servers, values: [1, 2], stepp: 1}\nobjectives: [throughput]\n",
        "s.yaml:3 parameters[0].stepp: unknown field; did you mean 'step'?",
    ),
    (
        "design: x\nparameters:\n  - {target: stations.a.servers, values: [1, 2]}\nobjectives: [thruput]\n",
        "s.yaml:4 objectives[0]: must be one of throughput, wip, lead_time, oee, cost, got 'thruput'",
    ),
    (
        "design: x\nparameters:\n  - {target: stations.a.servers, values: [1, 2]}\nobjectives: [throughput]\n"
        "constraints: ['a_servrs <= 3']\n",
        "s.yaml:5 constraints[0]: unknown name 'a_servrs'; did you mean 'a_servers'?",
    ),
    (
        "design: x\nparameters:\n  - {target: stations.a.servers, values: [1, 2]}\nobjectives: [throughput]\n"
        "constraints: ['__import__(\"os\") <= 3']\n",
        "s.yaml:5 constraints[0]: only names, numbers, + - * / and parentheses are allowed (found Call)",
    ),
    (
        "design: x\nparameters:\n  - {target: stations.a.servers, values: [1, 2]}\nobjectives: [throughput]\n"
        "cost: {machine_by_type: {weldr: 3}}\n",
        "s.yaml:5 cost.machine_by_type.weldr: no station of type 'weldr' in the line; did you mean 'welder'?",
    ),
    (
        "design: x\nparameters:\n  - {target: stations.a.servers, values: [1, 2]}\nobjectives: [throughput]\n"
        "simulation: {hours: 2, warmup_hours: 3}\n",
        "s.yaml:5 simulation.warmup_hours: must be < hours (2), got 3",
    ),
    ("design: x\nparameters: [\n", "s.yaml:3: YAML syntax error"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_space_files_name_file_line_and_field(text, expected):
    with pytest.raises(SpaceFileError) as info:
        parse_space(text, line(), filename="s.yaml")
    assert any(str(p).startswith(expected) for p in info.value.problems), str(info.value)


def test_every_problem_is_reported_at_once():
    text = (
        "design: x\nparameters:\n  - {target: stations.zz.servers, values: [1]}\n"
        "  - {target: buffers.b0.capacity, range: [-1, 2]}\nobjectives: [thruput]\n"
    )
    with pytest.raises(SpaceFileError) as info:
        parse_space(text, line(), filename="s.yaml")
    assert [p.line for p in info.value.problems] == [3, 4, 5]


def test_layout_parameter_checks_targets_in_every_layout(tmp_path):
    (tmp_path / "one.yaml").write_text(LINE)
    (tmp_path / "two.yaml").write_text(LINE.replace("id: b0", "id: bx").replace("b0", "bx"))
    text = (
        "design: x\nparameters:\n  - {target: layout, values: {one: one.yaml, two: two.yaml}}\n"
        "  - {target: buffers.b0.capacity, values: [1, 2]}\nobjectives: [throughput]\n"
    )
    with pytest.raises(SpaceFileError) as info:
        parse_space(text, line(), filename="s.yaml", base_dir=tmp_path)
    assert "unknown buffer 'b0'" in str(info.value) and "in layout 'three'" in str(info.value)
    ok = text.replace("buffers.b0.capacity", "stations.d.process_time")
    s = parse_space(ok, line(), filename="s.yaml", base_dir=tmp_path)
    assert [n for n, _ in s.layouts] == ["one", "two"]
    assert s.parameter("layout").levels_of() == ("one", "two")


def test_load_space_reports_unreadable_files(tmp_path: Path) -> None:
    line = parse_line(LINE)
    for path, message in unreadable_files(tmp_path, "design"):
        with pytest.raises(SpaceFileError) as info:
            load_space(path, line)
        (p,) = info.value.problems
        assert (p.file, p.line, p.path, p.message) == (str(path), 0, "", message)

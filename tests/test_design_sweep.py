"""Sweeps: variants reproduce single runs (same parameters, same seed), Pareto ranking on a
constructed case, the CLI end to end (table, plot, show, a variant written as a line file)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from physics.process.api import simulate
from scenes.lineparse import load_line, parse_line
from twin import cli
from twin.design import generators, pareto, results
from twin.design.evaluate import evaluate_variants
from twin.design.space import Kpi, Objective, Sense, apply, parse_space

SERIAL = """
line: serial3
stations:
  - {id: a, process_time: {dist: exponential, mean: 10}, failures: {mtbf: 400, mttr: 40}}
  - {id: b, process_time: {dist: lognormal, mean: 11, cv: 0.5}}
  - {id: c, process_time: {dist: uniform, low: 8, high: 12}}
buffers:
  - {id: b1, from: a, to: b, capacity: 2}
  - {id: b2, from: b, to: c, capacity: 1}
"""

SERIAL_SPACE = """
design: serial
parameters:
  - {target: buffers.b1.capacity, values: [1, 4]}
  - {target: stations.b.process_time, range: [9, 12], levels: 2}
objectives: [throughput, cost]
simulation: {hours: 1, replications: 3, seed: 4, batch: 3}
"""

PARALLEL = """
line: parallel
stations:
  - {id: a, process_time: {dist: exponential, mean: 10}}
  - {id: b, process_time: {dist: gamma, mean: 19, cv: 0.5}, servers: 2, failures: {mtbf: 600, mttr: 60, mode: time}}
  - {id: c, process_time: 9}
buffers:
  - {id: b1, from: a, to: b, capacity: 2}
  - {id: b2, from: b, to: c, capacity: 1}
"""

PARALLEL_SPACE = """
design: parallel
parameters:
  - {target: buffers.b1.capacity, values: [0, 3]}
  - {target: stations.b.process_time, values: [17, 21]}
objectives: [throughput, wip]
simulation: {hours: 1, replications: 3, seed: 7, batch: 4}
"""


def _check_single_runs(space, line, variants, plan, res):
    for v, spec, r in zip(variants, plan.specs, res, strict=True):
        assert spec == apply(line, space, v)
        single = simulate(spec, hours=1, replications=3, seed=space.simulation.seed)
        assert single.engine == r.engine
        np.testing.assert_array_equal(r.lanes["throughput"], single.kpis.throughput_per_hour)
        np.testing.assert_array_equal(r.lanes["wip"], single.kpis.wip)
        np.testing.assert_array_equal(r.lanes["oee"], single.kpis.line_oee()["oee"])
        assert r.throughput.mean == pytest.approx(float(np.mean(single.kpis.throughput_per_hour)))
        assert r.throughput.lo <= r.throughput.mean <= r.throughput.hi


def test_grid_sweep_of_a_serial_line_reproduces_single_runs():
    line = parse_line(SERIAL)
    space = parse_space(SERIAL_SPACE, line)
    variants = generators.grid(space)
    assert len(variants) == 4
    plan, res = evaluate_variants(space, line, variants, space.simulation)
    assert set(plan.engines) == {"serial"}
    assert len(plan.jobs) == 2  # 3 + 1 variants, the last job padded to the same shape
    _check_single_runs(space, line, variants, plan, res)


def test_random_sweep_of_a_general_line_reproduces_single_runs():
    line = parse_line(PARALLEL)
    space = parse_space(PARALLEL_SPACE, line)
    variants = generators.random(space, 3, np.random.default_rng(2))
    plan, res = evaluate_variants(space, line, variants, space.simulation)
    assert set(plan.engines) == {"general"}
    _check_single_runs(space, line, variants, plan, res)


def test_common_random_numbers_make_identical_variants_identical():
    line = parse_line(SERIAL)
    space = parse_space(SERIAL_SPACE, line)
    v = generators.grid(space)[0]
    _, res = evaluate_variants(space, line, [v, v, v], space.simulation)
    for r in res[1:]:
        np.testing.assert_array_equal(r.lanes["throughput"], res[0].lanes["throughput"])


def test_pareto_ranks_on_a_constructed_case():
    # minimize both: front = {0, 1, 2}; 3 is dominated by 1; 4 by 3; 5 ties 0 exactly (kept)
    f = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [4, 4], [1, 5]], dtype=float)
    rank = pareto.non_dominated_sort(f)
    assert rank.tolist() == [0, 0, 0, 1, 2, 0]
    crowd = pareto.crowding_distance(f[[0, 1, 2]])
    assert np.isinf(crowd[0]) and np.isinf(crowd[2]) and np.isfinite(crowd[1])
    # constrained domination: an infeasible point is behind every feasible one
    viol = np.array([0, 0, 0, 0, 0, 1.0])
    assert pareto.non_dominated_sort(f, viol).tolist() == [0, 0, 0, 1, 2, 3]
    # and through the table, with one maximized objective
    df = pd.DataFrame(
        {
            "throughput": [10.0, 12.0, 12.0, 9.0],
            "cost": [100.0, 150.0, 140.0, 100.0],
            "violation": [0.0, 0.0, 0.0, 0.0],
        }
    )
    objs = [
        Objective(kpi=Kpi.THROUGHPUT, sense=Sense.MAX),
        Objective(kpi=Kpi.COST, sense=Sense.MIN),
    ]
    ranked = results.rank(df, objs)
    assert ranked["pareto"].tolist() == [True, False, True, False]
    assert results.best(ranked, objs)["throughput"].tolist()[:2] == [12.0, 10.0]


def test_nsga2_survivor_selection_prefers_front_then_spread():
    f = np.array([[0, 4], [1, 3], [2, 2], [3, 1], [4, 0], [2.5, 2.5], [5, 5]], dtype=float)
    keep = generators.select_survivors(f, np.zeros(len(f)), 5)
    assert sorted(keep.tolist()) == [0, 1, 2, 3, 4]


def test_cli_sweep_show_and_write_line(tmp_path, capsys):
    line_file = tmp_path / "line.yaml"
    line_file.write_text(SERIAL)
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SERIAL_SPACE + "constraints: ['throughput >= 1']\n")
    out = tmp_path / "res.parquet"
    argv = [
        "sweep",
        str(line_file),
        "--space",
        str(space_file),
        "--generator",
        "grid",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "5 variants" in text and "Pareto front" in text
    assert (tmp_path / "res.png").stat().st_size > 1000
    df = pd.read_parquet(out)  # readable by pandas
    assert len(df) == 5 and df["generator"].tolist() == ["base"] + ["grid"] * 4
    for col in (
        "throughput",
        "throughput_lo",
        "throughput_hi",
        "wip",
        "lead_time",
        "oee",
        "cost",
        "rank",
        "pareto",
        "feasible",
        "b1_capacity",
        "b_process_time",
        "engine",
    ):
        assert col in df.columns
    df2, meta = results.read_table(out)
    front = results.pareto_front(df2, meta)
    assert front and all(set(f) >= {"variant", "parameters", "objectives"} for f in front)
    json.dumps(front)
    # the table agrees with a single run of the same parameters
    row = df.iloc[2]
    spec = apply(
        parse_line(SERIAL),
        parse_space(SERIAL_SPACE, parse_line(SERIAL)),
        {"b1_capacity": int(row["b1_capacity"]), "b_process_time": float(row["b_process_time"])},
    )
    single = simulate(spec, hours=1, replications=3, seed=4)
    assert row["throughput"] == pytest.approx(float(np.mean(single.kpis.throughput_per_hour)))

    assert cli.main(["sweep", "show", str(out), "--top", "3"]) == 0
    shown = capsys.readouterr().out
    assert len(shown.strip().splitlines()) == 2 + 3
    assert cli.main(["sweep", "show", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(front))

    written = tmp_path / "v2.yaml"
    assert cli.main(["sweep", "show", str(out), "--write-line", "2", "-o", str(written)]) == 0
    back = load_line(written)
    assert back.buffers == tuple(
        b.__class__(
            **{**{f: getattr(b, f) for f in b.__dataclass_fields__}, "line": back.buffers[i].line}
        )
        for i, b in enumerate(spec.buffers)
    )
    assert [s.process_time for s in back.stations] == [s.process_time for s in spec.stations]

    # CSV on request
    csv = tmp_path / "res.csv"
    argv = [
        "sweep",
        str(line_file),
        "--space",
        str(space_file),
        "--generator",
        "random",
        "--variants",
        "3",
        "--csv",
        "--out",
        str(csv),
        "--plot",
        str(tmp_path / "f.png"),
    ]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert len(pd.read_csv(csv)) == 3
    assert cli.main(["sweep", "show", str(csv)]) == 0


def test_cli_reports_bad_space_files_with_locations(tmp_path, capsys):
    line_file = tmp_path / "line.yaml"
    line_file.write_text(SERIAL)
    space_file = tmp_path / "space.yaml"
    space_file.write_text(
        "design: x\nparameters:\n  - {target: buffers.b9.capacity, values: [1]}\nobjectives: [throughput]\n"
    )
    rc = cli.main(
        ["sweep", str(line_file), "--space", str(space_file), "--out", str(tmp_path / "r.parquet")]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert f"{space_file}:3 parameters[0].target: unknown buffer 'b9'" in err


def test_nsga2_sweep_with_gradient_refinement():
    from twin.design.generators import Generator
    from twin.design.sweep import SweepConfig, run_sweep

    line = parse_line(SERIAL)
    space = parse_space(
        SERIAL_SPACE.replace(
            "levels: 2}", "levels: 2}\n  - {target: stations.c.process_time, range: [8, 12]}"
        )
        + "nsga2: {population: 4}\ngradient: {refine: 1, steps: 2, parts: 1000, warmup_parts: 100}\n",
        line,
    )
    cfg = SweepConfig(generator=Generator.NSGA2, variants=8, sim=space.simulation)
    df = run_sweep(space, line, cfg)
    gens = df["generator"].tolist()
    assert gens[0] == "base" and gens.count("nsga2") == 7
    assert 1 <= gens.count("gradient") <= 2
    assert df["pareto"].any() and (df["rank"] >= 0).all()
    params = ["b1_capacity", "b_process_time", "c_process_time"]
    assert not df[df["generator"] != "gradient"].duplicated(subset=params).any()

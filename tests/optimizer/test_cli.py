"""`evfleet optimize`: files in, schedule out, comparison table, clear errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from evfleet.app.cli import app
from optimizer.problem import Schedule
from optimizer.strategies import STRATEGIES

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
runner = CliRunner()


def test_optimize_writes_a_valid_schedule(tmp_path: Path) -> None:
    """--input/--output solves and writes a Schedule document."""
    out = tmp_path / "schedule.json"
    res = runner.invoke(
        app, ["optimize", "--input", str(EXAMPLES / "seed004-shared-source.json"), "--output", str(out)]
    )
    assert res.exit_code == 0, res.output
    sched = Schedule.model_validate_json(out.read_text())
    assert sched.strategy == "service_time" and sched.status == "optimal"
    assert "written to" in res.output


def test_strategy_and_compare_table(tmp_path: Path) -> None:
    """--compare prints one row per strategy; --strategy picks what is written."""
    out = tmp_path / "s.json"
    res = runner.invoke(
        app,
        [
            "optimize",
            "-i",
            str(EXAMPLES / "seed004-shared-source.json"),
            "-o",
            str(out),
            "--strategy",
            "edf",
            "--compare",
        ],
    )
    assert res.exit_code == 0, res.output
    for name in STRATEGIES:
        if name not in ("cost", "profit"):
            assert name in res.output
    assert json.loads(out.read_text())["strategy"] == "edf"


def test_invalid_instance_names_the_field(tmp_path: Path) -> None:
    """A validation error is a message naming the field, exit code 2, no traceback."""
    doc = json.loads((EXAMPLES / "seed004-shared-source.json").read_text())
    doc["evs"][1]["departure"] = 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    res = runner.invoke(app, ["optimize", "-i", str(bad), "-o", str(tmp_path / "x.json")])
    assert res.exit_code == 2
    assert "evs.1" in res.output and "must be after arrival" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "x.json").exists()


def test_bad_files_and_names(tmp_path: Path) -> None:
    """Missing file, broken JSON, unknown strategy, no output: one-line errors, exit 2."""
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    cases = [
        (["-i", str(tmp_path / "missing.json"), "-o", "x"], "cannot read instance file"),
        (["-i", str(broken), "-o", "x"], "not valid JSON"),
        (
            ["-i", str(EXAMPLES / "seed004-shared-source.json"), "-o", "x", "-s", "magic"],
            "unknown strategy 'magic'",
        ),
        (["-i", str(EXAMPLES / "seed004-shared-source.json")], "give --output"),
    ]
    for args, text in cases:
        res = runner.invoke(app, ["optimize", *args])
        assert res.exit_code == 2, (args, res.output)
        assert text in res.output and "Traceback" not in res.output


def test_evaluate_rolling_prints_the_saving_kept(tmp_path: Path) -> None:
    """--evaluate rolling runs the Monte Carlo and prints one row per strategy; bad input is one line."""
    from optimizer.cases.seed001 import fleet

    inst = tmp_path / "fleet.json"
    inst.write_text(fleet(6).model_dump_json())
    res = runner.invoke(app, ["optimize", "-i", str(inst), "--evaluate", "rolling", "--runs", "1"])
    assert res.exit_code == 0, res.output
    for row in ("uncontrolled", "perfect", "rolling", "rolling_robust", "saving kept"):
        assert row in res.output
    bad = runner.invoke(app, ["optimize", "-i", str(inst), "--evaluate", "stochastic"])
    assert bad.exit_code == 2 and "unknown evaluation" in bad.output
    pool = runner.invoke(
        app, ["optimize", "-i", str(EXAMPLES / "seed003-company-fleet.json"), "--evaluate", "rolling"]
    )
    assert pool.exit_code == 2 and "fixed charger" in pool.output

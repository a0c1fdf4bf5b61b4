"""The baseline comparison end to end on the tiny dataset: seeds, resumable runs, the guard, the
report the README quotes."""

import json
from pathlib import Path

import pytest

from examples import compare_baselines


def test_methods_cover_every_baseline_and_the_ablations():
    names = [m.name for m in compare_baselines.methods()]
    assert set(names) >= {"bnn", "xnor", "dorefa", "bireal", "irnet", "rad", "reactnet", "bifsmn"}
    assert {"lpb", "lpb-nofid", "lpb-nodual", "lpb-nothin", "lpb-sharednorms"} <= set(names)
    with pytest.raises(SystemExit, match=r"unknown method.*the methods are: bifsmn, bireal"):
        compare_baselines.main(["--methods", "bnn,bogus"])
    with pytest.raises(SystemExit, match="--seeds takes comma-separated integers"):
        compare_baselines.main(["--seeds", "zero"])


def test_two_seeds_resume_and_report(tiny: Path, tmp_path: Path):
    cache = tiny.parent.parent  # the tiny dataset's cache folder
    args = [
        "--size", "tiny", "--cache-dir", str(cache), "--runs", str(tmp_path / "runs"),
        "--out", str(tmp_path / "out"), "--teacher-epochs", "1", "--epochs", "1",
        "--batch-size", "16", "--methods", "bnn", "--seeds", "0,1",
    ]  # fmt: skip
    assert compare_baselines.main(args) == 0
    report = (tmp_path / "out" / "comparison.md").read_text()
    assert "| BNN |" in report
    assert " ± " in report and "seeds 0, 1" in report
    assert "`backbone.*.memory.0`" in report  # the share of +1 per layer group
    runs = json.loads((tmp_path / "out" / "comparison.json").read_text())["runs"]
    assert sorted((r["method"], r["seed"]) for r in runs) == [("bnn", 0), ("bnn", 1)]
    assert all(r["signs_start"]["worst_constant"] <= compare_baselines.GUARD for r in runs)
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 0
    # a second call with one seed reuses the finished runs and reports that seed only
    assert compare_baselines.main([*args[:-2], "--seeds", "1"]) == 0
    again = json.loads((tmp_path / "out" / "comparison.json").read_text())["runs"]
    assert [r for r in runs if r["seed"] == 1] == again

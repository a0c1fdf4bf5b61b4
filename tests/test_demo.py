"""``make demo`` end to end on the tiny synthetic set: two seeds, the held-out voices, the report."""

import json
from pathlib import Path

import pytest

from examples.kws import demo
from examples.kws.pipeline import spread


def test_spread_formats_mean_and_sample_std():
    assert spread([0.8]) == "80.00%"
    assert spread([0.81, 0.83, 0.82]) == "82.00 ± 1.00%"
    assert spread([0.01, -0.01], unit=" pt", sign=True) == "+0.00 ± 1.41 pt"


@pytest.mark.filterwarnings("ignore::UserWarning")  # tiny has 6 of the 35 words
def test_demo_two_seeds_with_heldout_voices(tiny: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    args = ["--size", "tiny", "--teacher-epochs", "2", "--student-epochs", "1", "--batch-size", "8"]
    args += ["--seeds", "0", "1", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    args += ["--cache-dir", str(tiny.parent.parent), "--threads", "1"]
    assert demo.main(args) == 0
    text = (out / "report.md").read_text()
    assert "held-out voices" in text and "mean ± std over seeds 0, 1" in text
    assert "| seed |" in text and (out / "accuracy.png").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    evals = results["evaluations"]
    assert [e["seed"] for e in evals] == [0, 1]
    for e in evals:
        assert 0 <= e["teacher_heldout_acc"] <= 1
        assert all(o["heldout_acc"] is not None for o in e["options"])
        assert all(o["compiled_agreement"] == 1.0 for o in e["options"])
    assert set(results["extra"]["minutes"]) >= {"data", "seed 0", "seed 1", "total"}
    # a second call reuses the finished runs
    assert demo.main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert all(all(r["reused"].values()) for r in again["extra"]["runs"])
    assert "report:" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::UserWarning")  # tiny has 6 of the 35 words
def test_demo_with_augmented_views(tiny: Path, tmp_path: Path):
    out = tmp_path / "report"
    args = ["--size", "tiny", "--teacher-epochs", "1", "--student-epochs", "1", "--batch-size", "8"]
    args += ["--views", "1", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    args += ["--cache-dir", str(tiny.parent.parent), "--threads", "1"]
    assert demo.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["extra"]["views"] == 1
    run = Path(results["extra"]["runs"][0]["teacher_run"])
    assert "-views1-seed0" in run.parent.name  # never the run of a teacher without the views
    assert "1 augmented views" in (out / "report.md").read_text()

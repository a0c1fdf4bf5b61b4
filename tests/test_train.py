"""The example training loop: checkpoints, resume, reuse of finished runs, DDP with torchrun."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import binarize
from examples.kws.augment import spec_augment
from examples.kws.models import DFSMN
from examples.kws.pipeline import task_loss
from examples.kws.train import TrainConfig, accuracy, fit

ROOT = Path(__file__).resolve().parents[1]


def tiny_data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 1, 16, 16, generator=g) * 0.5 + y[:, None, None, None].float()
    return TensorDataset(x, y)


def tiny_model():
    torch.manual_seed(0)
    return DFSMN(
        num_classes=4, n_mels=16, frames=16, num_layers=2, frontend_channels=4, width=16, hidden=32
    )


def ce(m, x, y):
    return F.cross_entropy(m(x), y)


def test_teacher_d_fsmn_has_the_reference_size():
    assert sum(p.numel() for p in DFSMN().parameters()) == 600_252


def test_fit_checkpoints_resumes_and_reuses(tmp_path):
    data = tiny_data()
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-2, optimizer="adamw")
    run = tmp_path / "run"
    model = tiny_model()
    first = fit(model, data, ce, lambda m: {"acc": accuracy(m, data)}, cfg, run)
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    assert len(first.history) == 3 and first.best_epoch >= 1
    saved = json.loads((run / "result.json").read_text())
    assert saved["best"]["acc"] == first.best["acc"]

    # a finished run is reused, not retrained and not overwritten
    stamp = (run / "best.pt").stat().st_mtime_ns
    again = fit(tiny_model(), data, ce, lambda m: {"acc": accuracy(m, data)}, cfg, run)
    assert again.reused and (run / "best.pt").stat().st_mtime_ns == stamp

    # a run folder holds one setting: another is refused, for a finished or an interrupted run
    longer = TrainConfig(epochs=5, batch_size=16, lr=1e-2, optimizer="adamw")
    with pytest.raises(ValueError, match="epochs: 3 there, 5 now"):
        fit(tiny_model(), data, ce, lambda m: {"acc": accuracy(m, data)}, longer, run)

    # an interrupted run resumes from last.pt (stopped here as the third epoch starts)
    class Stop(Exception):
        pass

    def stop_at_third(model, epoch):
        if epoch == 2:
            raise Stop

    cut = tmp_path / "cut"
    with pytest.raises(Stop):
        fit(
            tiny_model(),
            data,
            ce,
            lambda m: {"acc": accuracy(m, data)},
            cfg,
            cut,
            on_epoch=stop_at_third,
        )
    with pytest.raises(ValueError, match="interrupted run of another setting"):
        fit(tiny_model(), data, ce, lambda m: {"acc": accuracy(m, data)}, longer, cut)
    resumed = fit(tiny_model(), data, ce, lambda m: {"acc": accuracy(m, data)}, cfg, cut)
    assert resumed.resumed_from == 2 and len(resumed.history) == 3

    # overwrite starts from scratch
    fresh = fit(
        tiny_model(), data, ce, lambda m: {"acc": accuracy(m, data)}, cfg, run, overwrite=True
    )
    assert fresh.resumed_from == 0 and len(fresh.history) == 3


def test_fit_is_deterministic_for_a_seed(tmp_path):
    data = tiny_data()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2, optimizer="sgd", seed=3)
    states = []
    for name in ("a", "b"):
        m = tiny_model()
        fit(m, data, ce, lambda m: {"acc": accuracy(m, data)}, cfg, tmp_path / name)
        states.append(m.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_student_trains_with_the_same_loop(tmp_path):
    data = tiny_data()  # 4 classes, separable by the mean: chance is 25%
    teacher = tiny_model()
    student = binarize.convert(teacher, teacher, example_input=data.tensors[0][:1])
    before = accuracy(student, data, thin=0)
    # 8 epochs of 3 steps: evaluation uses BatchNorm running statistics, which the prefix (run once
    # per step for all options) updates once per step
    cfg = TrainConfig(epochs=8, batch_size=16, lr=1e-2, optimizer="adamw", grad_clip=5.0)
    result = fit(
        student,
        data,
        lambda m, x, y: m(x, target=y),
        lambda m: {"acc": accuracy(m, data, thin=0)},
        cfg,
        tmp_path / "student",
        param_groups=student.parameter_groups(0.0, 1e-2, 0.1),
    )
    assert len(result.history) == 8
    assert result.best["acc"] >= 0.6 and result.best["acc"] > before + 0.2


def test_spec_augment_shifts_and_masks_per_example():
    x = torch.arange(32.0).repeat(6, 1, 16, 1)  # (6, 1, 16, 32): frame index as the value
    torch.manual_seed(1)
    y = spec_augment(x, max_shift=2, freq_mask=0, time_mask=0)
    for row in y[:, 0, 0]:  # each example is the ramp shifted by -2..2, silence (0) filled
        shift = int(row[5] - 5)
        assert -2 <= shift <= 2
        kept = row[2:-2]
        assert torch.equal(kept, torch.arange(2.0, 30.0) + shift)
    masked = spec_augment(torch.randn(64, 1, 16, 32), max_shift=0, freq_mask=4, time_mask=4)
    assert masked.shape == (64, 1, 16, 32)
    assert (masked.std(dim=3) < 1e-6).any()  # some frequency rows are masked flat
    with pytest.raises(ValueError, match="expects features"):
        spec_augment(torch.randn(4, 16, 32))


def test_fit_with_augmentation_and_label_smoothing(tmp_path):
    data = tiny_data()
    cfg = TrainConfig(
        epochs=6, batch_size=16, lr=1e-2, optimizer="adamw", spec_augment=True, label_smoothing=0.1
    )
    model = tiny_model()
    loss = task_loss(cfg)
    result = fit(
        model,
        data,
        lambda m, x, y: loss(m(x), y),
        lambda m: {"acc": accuracy(m, data)},
        cfg,
        tmp_path / "run",
    )
    assert result.best["acc"] > 0.5
    logits = torch.tensor([[10.0, -10.0]])
    assert loss(logits, torch.tensor([0])) > F.cross_entropy(logits, torch.tensor([0])) + 0.1


def test_fit_with_ema_keeps_the_averaged_weights(tmp_path):
    data = tiny_data()
    cfg = TrainConfig(epochs=6, batch_size=16, lr=1e-2, optimizer="adamw", ema_decay=0.9)
    result = fit(tiny_model(), data, ce, lambda m: {"acc": accuracy(m, data)}, cfg, tmp_path)
    assert result.best["acc"] >= 0.4  # chance is 0.25; the average lags the raw weights
    best = torch.load(tmp_path / "best.pt", weights_only=False)["model"]
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    assert last["ema"] is not None
    if result.best_epoch == 6:  # the best is the last epoch's EMA, not the raw weights
        assert all(torch.equal(best[k], v) for k, v in last["ema"].items())
    assert any(not torch.equal(last["ema"][k], v) for k, v in last["model"].items())


def test_dropout_override_applies_to_every_dropout_layer(tmp_path):
    model = tiny_model()
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.2}
    cfg = TrainConfig(epochs=1, batch_size=16, dropout=0.35)
    fit(model, tiny_data(), ce, lambda m: {}, cfg, tmp_path / "run")
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.35}


def test_bad_train_config():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig(dropout=1.0)
    with pytest.raises(ValueError, match="smaller than one batch"):
        fit(tiny_model(), tiny_data(8), ce, lambda m: {}, TrainConfig(batch_size=16), "/tmp/_never")


SCRIPT = textwrap.dedent("""
    import sys, json, torch
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    import torch.distributed as dist
    import binarize
    from test_train import tiny_data, tiny_model
    from examples.kws.train import TrainConfig, accuracy, fit, init_distributed, rank
    assert init_distributed() and dist.get_world_size() == 2
    data = tiny_data(64)
    teacher = tiny_model()
    student = binarize.convert(teacher, teacher, example_input=data.tensors[0][:1])
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, optimizer="adamw")
    fit(student, data, lambda m, x, y: m(x, target=y), lambda m: {{"acc": accuracy(m, data)}},
        cfg, {run!r}, param_groups=student.parameter_groups(0.0))
    flat = torch.cat([p.detach().flatten() for p in student.parameters()])
    out = [None, None]
    dist.all_gather_object(out, flat.tolist())
    if rank() == 0:
        diff = max(abs(a - b) for a, b in zip(out[0], out[1]))
        print(json.dumps({{"diff": diff, "n": len(out[0])}}))
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_ddp_with_torchrun_on_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_job.py"
    script.write_text(
        SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), run=str(tmp_path / "run"))
    )
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] > 1000 and result["diff"] == 0.0  # replicas stay identical
    assert (tmp_path / "run" / "result.json").is_file()

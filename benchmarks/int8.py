"""The peer a user would pick instead of 1-bit: the same FP32 teacher quantized to INT8 by ONNX
Runtime (static quantization, QDQ format, per-channel int8 weights, uint8 activations calibrated
on training features with ORT's default MinMax calibrator), timed in the same settings as every
other row, with its test accuracy and its file size."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from .common import Budget, time_us
from .end_to_end import SETTINGS, Row, export_onnx, ort_session, setting_key

NAME = "INT8 teacher, ONNX Runtime (static QDQ, per-channel)"


class _Reader:
    """ORT CalibrationDataReader over a tensor of features, a few utterances per batch."""

    def __init__(self, x: np.ndarray, batch: int = 32) -> None:
        self.parts = [x[i : i + batch] for i in range(0, len(x), batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.parts):
            return None
        self.i += 1
        return {"x": self.parts[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def quantize(teacher: torch.nn.Module, x1: torch.Tensor, calib: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    fp32 = export_onnx(teacher, x1, out.with_suffix(".fp32.onnx"))
    quantize_static(
        str(fp32),
        str(out),
        _Reader(calib),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )
    return out


def run(models, budget: Budget, log=print) -> dict[str, object]:
    """The INT8 row (timings as end_to_end's rows), its accuracy, size and calibration set."""
    calib = models.calib if models.calib is not None else models.xb
    calib_src = "training features" if models.calib is not None else "the benchmark inputs"
    x = {"1": models.x1.contiguous().numpy(), "B": models.xb.contiguous().numpy()}
    row = Row(NAME, "int8")
    with tempfile.TemporaryDirectory() as tmp:
        path = quantize(models.teacher, models.x1, calib.numpy(), Path(tmp) / "teacher.int8.onnx")
        size = path.stat().st_size
        sessions = {t: ort_session(path, t) for t in (1, "all")}
        for batch, threads in SETTINGS:
            sess, xin = sessions[threads], x[batch]
            row.times[setting_key(batch, threads)] = time_us(
                lambda sess=sess, xin=xin: sess.run(None, {"x": xin}), budget
            )
        acc = None
        if models.test is not None:
            xt, yt = models.test.tensors
            logits = np.concatenate(
                [
                    sessions["all"].run(None, {"x": xt[i : i + 256].numpy()})[0]
                    for i in range(0, len(xt), 256)
                ]
            )
            acc = float((logits.argmax(-1) == yt.numpy()).mean())
    log(f"  {row.name}: " + ", ".join(f"{k} {v['median']:.1f} us" for k, v in row.times.items()))
    return {
        "row": row,
        "bytes": size,
        "accuracy": acc,
        "calibration": f"{len(calib)} utterances of {calib_src}",
    }

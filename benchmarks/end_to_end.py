"""End-to-end latency: one utterance and a batch, 1 thread and all threads, features precomputed
(outside every timing). Rows: the FP32 teacher in eager PyTorch, torch.compile and ONNX Runtime;
the BinarizedModel in PyTorch; the compiled 1-bit model at every depth option."""

from __future__ import annotations

import os
import statistics
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import binarize

from .common import Budget, time_us

SETTINGS = [("1", 1), ("1", "all"), ("B", 1), ("B", "all")]  # (batch, threads)


@dataclass
class Row:
    name: str
    group: str  # "fp32" (a baseline), "torch-1bit", "compiled"
    thin: int | None = None
    variant: str = ""  # "" for the main student, else BenchModels.variants' label
    times: dict[str, dict[str, float]] = field(default_factory=dict)  # setting key -> stats
    note: str = ""


def setting_key(batch: str, threads: int | str) -> str:
    return f"b{batch}-t{threads}"


def _torch_threads(n: int | str) -> None:
    torch.set_num_threads((os.cpu_count() or 1) if n == "all" else int(n))


def export_onnx(teacher: torch.nn.Module, x: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            teacher,
            (x,),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def ort_session(path: Path, threads: int | str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads != "all":
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class _Split:
    """Run the compiled model on a batch split across a thread pool (the call releases the GIL)."""

    def __init__(self, compiled, thin: int, workers: int) -> None:
        self.native = compiled._native[thin]
        self.pool = ThreadPoolExecutor(workers)
        self.workers = workers

    def __call__(self, x: np.ndarray) -> np.ndarray:
        parts = np.array_split(x, self.workers)
        return np.concatenate(list(self.pool.map(self.native.run, parts)))

    def close(self) -> None:
        self.pool.shutdown()


def run(
    models, budget: Budget, impl: str = "auto", with_compile: bool = True, log=print
) -> dict[str, object]:
    """Time every row in every setting; returns rows, the accuracy per row and the notes."""
    teacher, student = models.teacher, models.student
    x1, xb = models.x1.contiguous(), models.xb.contiguous()
    inputs = {"1": x1, "B": xb}
    np_inputs = {k: v.numpy() for k, v in inputs.items()}
    cores = os.cpu_count() or 1
    rows: list[Row] = []
    notes: list[str] = []
    threads0 = torch.get_num_threads()

    def measure(row: Row, make_fn) -> None:
        for batch, threads in SETTINGS:
            fn = make_fn(batch, threads)
            if fn is None:
                continue
            row.times[setting_key(batch, threads)] = time_us(fn, budget)
        log(
            f"  {row.name}: " + ", ".join(f"{k} {v['median']:.1f} us" for k, v in row.times.items())
        )

    try:
        with torch.inference_mode():
            # -- FP32 teacher, eager
            row = Row("FP32 teacher, PyTorch eager", "fp32")

            def eager(batch, threads):
                _torch_threads(threads)
                x = inputs[batch]
                return lambda: teacher(x)

            measure(row, eager)
            rows.append(row)

            # -- FP32 teacher, torch.compile (default mode)
            row = Row("FP32 teacher, torch.compile", "fp32")
            if with_compile:
                try:

                    def compiled_fn(batch, threads):
                        _torch_threads(threads)
                        torch._dynamo.reset()  # generated code fixes its thread count
                        fn = torch.compile(teacher)
                        x = inputs[batch]
                        fn(x)
                        return lambda: fn(x)

                    measure(row, compiled_fn)
                except Exception as exc:
                    row.note = f"torch.compile failed: {type(exc).__name__}: {exc}"[:300]
                    notes.append(row.note)
            else:
                row.note = "skipped (--quick): compiling takes minutes on 2 cores"
            rows.append(row)

        # -- FP32 teacher, ONNX Runtime
        row = Row("FP32 teacher, ONNX Runtime", "fp32")
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(teacher, x1, Path(tmp) / "teacher.onnx")
            sessions = {t: ort_session(path, t) for t in (1, "all")}

            def ort_fn(batch, threads):
                sess, x = sessions[threads], np_inputs[batch]
                return lambda: sess.run(None, {"x": x})

            measure(row, ort_fn)
            ort_outputs = sessions[1].run(None, {"x": np_inputs["B"]})[0]
        rows.append(row)
        ref = teacher(xb).detach().numpy()
        notes.append(
            f"ONNX Runtime output vs PyTorch: max abs logit difference "
            f"{float(np.abs(ort_outputs - ref).max()):.2e}"
        )

        # -- BinarizedModel in PyTorch
        with torch.inference_mode():
            for k in student.thin_options:
                row = Row(f"1-bit BinarizedModel, PyTorch, option {k}", "torch-1bit", k)

                def student_fn(batch, threads, k=k):
                    _torch_threads(threads)
                    x = inputs[batch]
                    return lambda: student(x, thin=k)

                measure(row, student_fn)
                rows.append(row)

        # -- compiled 1-bit model at every option (and the variants')
        for variant, st in models.students().items():
            compiled = binarize.compile(st, thin="all", impl=impl)
            splitters = {k: _Split(compiled, k, cores) for k in compiled.thin_options}
            from .models import conv_label

            tag = ", " + (variant or conv_label(models.binarize_convs))
            try:
                for k in compiled.thin_options:
                    blocks = len(st.blocks_at(k))
                    row = Row(
                        f"1-bit compiled ({compiled.impl}{tag}), option {k} ({blocks} blocks)",
                        "compiled",
                        k,
                        variant,
                    )
                    native = compiled._native[k]

                    def native_fn(batch, threads, k=k, native=native, splitters=splitters):
                        x = np_inputs[batch]
                        if threads == "all" and batch == "B" and cores > 1:
                            return lambda: splitters[k](x)
                        return lambda: native.run(x)

                    measure(row, native_fn)
                    rows.append(row)
            finally:
                for s in splitters.values():
                    s.close()
        notes.append(
            "compiled, all threads: the batch is split across a pool of "
            f"{cores} threads (one native call per part, the GIL released); one utterance runs "
            "in one call on one thread, so its 'all threads' time is the 1-thread path"
        )
    finally:
        torch.set_num_threads(threads0)
    return {
        "rows": rows,
        "notes": notes,
        "impl": compiled.impl,
        "cores": cores,
        "batch": int(xb.shape[0]),
    }


def fastest_fp32(rows: list[Row], key: str) -> float | None:
    vals = [r.times[key]["median"] for r in rows if r.group == "fp32" and key in r.times]
    return min(vals) if vals else None


@torch.no_grad()
def accuracies(models, impl: str = "auto") -> dict[str, float]:
    """Test accuracy per row kind (teacher, student option k in PyTorch and compiled)."""
    if models.test is None:
        return {}
    x, y = models.test.tensors
    out = {"teacher": float((models.teacher(x).argmax(-1) == y).float().mean())}
    compiled = binarize.compile(models.student, thin="all", impl=impl)
    for k in models.student.thin_options:
        out[f"torch_{k}"] = float((models.student(x, thin=k).argmax(-1) == y).float().mean())
        out[f"compiled_{k}"] = float((compiled(x, thin=k).argmax(-1) == y).float().mean())
    return out


def streaming(models, budget: Budget, impl: str = "auto") -> dict[str, dict[str, float]]:
    """Pushing one input frame at a time, as an always-on spotter runs: per option, the median
    time of a whole utterance streamed (one push per frame, then finish) divided by its frames,
    against the whole-utterance call divided by the same frames (1 thread). Measured twice: in
    C++ (``Program.time_stream``: the runtime alone, as a device runs it through the C API; the
    target's figure) and through Python (one ``push`` call per frame, the binding's overhead
    included)."""
    x = models.x1.contiguous().numpy()
    compiled = binarize.compile(models.student, thin="all", impl=impl)
    out = {}
    for k in compiled.thin_options:
        native = compiled._native[k]
        t_axis = compiled.programs[k].time_axis  # with the batch axis
        frames = x.shape[t_axis]
        parts = [np.ascontiguousarray(np.take(x, [t], axis=t_axis)) for t in range(frames)]

        def streamed(native=native, parts=parts):
            s = native.stream()
            for f in parts:
                s.push(f)
            s.finish()
            return s.output()

        ref = native.run(x)
        got = streamed()
        whole = time_us(lambda native=native: native.run(x), budget)["median"]
        stream = time_us(streamed, budget)["median"]
        native.time_stream(x, max(budget.warmup, 1))  # warm-up
        w_ns, s_ns = native.time_stream(x, max(budget.reps, 20))
        c_whole, c_stream = statistics.median(w_ns) / 1e3, statistics.median(s_ns) / 1e3
        out[str(k)] = {
            "frames": frames,
            "stream_us_per_frame": c_stream / frames,
            "whole_us_per_frame": c_whole / frames,
            "ratio": c_stream / c_whole,
            "python_stream_us_per_frame": stream / frames,
            "python_whole_us_per_frame": whole / frames,
            "python_ratio": stream / whole,
            "same_output": bool(np.array_equal(got, ref)),
        }
    return out

"""``CompiledModel``: a lowered student running on the native FBCK runtime."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import torch

from . import artifact
from .lower import Program, lower


def _native():
    try:
        from . import _fbck
    except ImportError as exc:  # the extension was not built
        raise ImportError(
            "the native extension backends._fbck is not built: run `pip install -e .` (or `make "
            f"test`) in the binarize checkout ({exc})"
        ) from exc
    return _fbck


def _build(program: Program, impl: str):
    artifact.validate_program(program)
    fb = _native()
    native = fb.Program(impl)
    for shape in program.values:
        native.add_value(shape)
    for value, base in program.aliases.items():
        native.set_alias(value, base)
    for op in program.ops:
        ints, floats, strs, lists = {}, {}, {}, {}
        for key, v in op.attrs.items():
            if isinstance(v, bool | int):
                ints[key] = int(v)
            elif isinstance(v, float):
                floats[key] = v
            elif isinstance(v, str):
                strs[key] = v
            elif isinstance(v, list | tuple):
                lists[key] = [int(x) for x in v]
            else:
                raise artifact.ArtifactError(
                    f"op {op.name!r}: attribute {key!r} has type {type(v)}"
                )
        f32 = {
            r: program.tensors[k].reshape(-1)
            for r, k in op.params.items()
            if program.tensors[k].dtype == np.float32
        }
        u64 = {
            r: program.tensors[k].reshape(-1)
            for r, k in op.params.items()
            if program.tensors[k].dtype == np.uint64
        }
        native.add_op(op.kind, op.name, op.inputs, op.output, ints, floats, strs, lists, f32, u64)
    native.finalize(program.input, program.output, program.time_axis)
    return native


def _as_input(x: Any, shape: list[int], what: str = "input") -> tuple[np.ndarray, bool, bool]:
    """(float32 contiguous batch, was torch, had no batch axis) with clear errors."""
    is_torch = isinstance(x, torch.Tensor)
    if is_torch:
        arr = x.detach().cpu().numpy()
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        raise TypeError(f"{what} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if arr.dtype not in (np.float32, np.float64, np.float16):
        raise TypeError(f"{what} must hold floats (float32, float64 or float16), got {arr.dtype}")
    single = arr.ndim == len(shape)
    if single:
        arr = arr[None]
    if arr.ndim != len(shape) + 1 or list(arr.shape[1:]) != list(shape):
        dims = ", ".join(map(str, shape))
        raise ValueError(
            f"{what} shape {tuple(x.shape)} does not fit the model: expected (batch, {dims}) or ({dims})"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr, is_torch, single


class CompiledModel:
    """A student lowered at one depth option and running on native kernels (one call per batch).

    Calls are thread-safe: the native program is immutable and each call has its own workspace.

    Example::

        compiled = binarize.compile(student, thin=0)
        logits = compiled(features)          # numpy or torch, (B, 1, 32, 32) or (1, 32, 32)
        compiled.save("kws.bnn")
        same = binarize.load("kws.bnn")
    """

    def __init__(self, program: Program, impl: str = "auto") -> None:
        self.program = program
        self._native = _build(program, impl)

    # -- properties ------------------------------------------------------------------------------
    @property
    def input_shape(self) -> list[int]:
        return list(self.program.values[self.program.input])

    @property
    def output_shape(self) -> list[int]:
        return list(self.program.values[self.program.output])

    @property
    def impl(self) -> str:
        """The kernel implementation in use ("avx2", "neon", "ref"...)."""
        return self._native.impl

    @property
    def thin(self) -> int:
        return int(self.program.meta.get("thin", 0))

    def size_bytes(self, fp_dtype: str = "float32") -> int:
        """Size of the artifact :meth:`save` writes: the deployed storage figure."""
        return artifact.artifact_size(self.program, fp_dtype)

    # -- running ---------------------------------------------------------------------------------
    def __call__(self, x: Any) -> Any:
        arr, is_torch, single = _as_input(x, self.input_shape)
        y = self._native.run(arr)
        if single:
            y = y[0]
        return torch.from_numpy(y) if is_torch else y

    def stream(self) -> Stream:
        """Frame-by-frame execution for one utterance; see :class:`Stream`."""
        if self.program.time_axis < 1:
            raise ValueError("this model's input has no time axis to stream over")
        return Stream(self)

    # -- storage ---------------------------------------------------------------------------------
    def save(
        self, path: str | os.PathLike, fp_dtype: str = "float32", overwrite: bool = False
    ) -> int:
        """Write the deployable artifact (safetensors + JSON program, versioned and checksummed).
        ``fp_dtype="float16"`` stores the full-precision constants in half precision. Returns bytes."""
        return artifact.save(self.program, path, fp_dtype, overwrite)

    def __repr__(self) -> str:
        return (
            f"CompiledModel(thin={self.thin}, ops={len(self.program.ops)}, impl={self.impl}, "
            f"input={self.input_shape}, output={self.output_shape})"
        )


class Stream:
    """Feed an utterance frame by frame; the memory blocks keep their context as state.

    ``push(frames)`` takes ``(1, ..., n, ...)`` with ``n`` new frames on the input's time axis
    (or without the batch axis) and returns the output frames that became ready (for models with a
    per-frame output) or None; ``finish()`` returns the logits, equal to the whole-utterance call.
    """

    def __init__(self, model: CompiledModel) -> None:
        self.model = model
        self._native = model._native.stream()
        self._lock = threading.Lock()
        self._returned = 0
        self._torch = False

    def push(self, frames: Any) -> Any:
        shape = list(self.model.input_shape)
        t = self.model.program.time_axis - 1
        if not isinstance(frames, np.ndarray | torch.Tensor):
            raise TypeError("frames must be a numpy array or a torch tensor")
        n = frames.shape[t + (frames.ndim == len(shape) + 1)]
        shape[t] = n
        arr, self._torch, _ = _as_input(frames, shape, "frames")
        with self._lock:
            self._native.push(arr)
            return self._new_frames()

    def _new_frames(self) -> Any:
        if self._native_output_time_axis() < 1:
            return None
        ready = self._native.output_frames
        out = np.take(
            self._native.output(),
            range(self._returned, ready),
            axis=self._native_output_time_axis(),
        )[0]
        self._returned = ready
        return torch.from_numpy(out) if self._torch else out

    def _native_output_time_axis(self) -> int:
        return self.model._native.output_time_axis

    def finish(self) -> Any:
        """End the utterance; returns the model output (as the whole-utterance call would)."""
        with self._lock:
            self._native.finish()
            y = self._native.output()[0]
        return torch.from_numpy(y) if self._torch else y

    @property
    def frames_in(self) -> int:
        return self._native.frames_in


def compile_model(
    student, thin: int = 0, impl: str = "auto", time_axis: int | None = None
) -> CompiledModel:
    """Lower ``student`` at depth option ``thin`` and load it on the native runtime.

    ``impl`` picks the kernels ("auto": the best this CPU supports; "ref", "avx2", "neon");
    ``time_axis`` is the input's time axis, used for streaming. By default it is the axis along
    which the most ops can run frame by frame (the memory blocks' time), the last one on a tie.
    """
    if time_axis is not None:
        return CompiledModel(lower(student, thin, time_axis), impl)
    rank = len(student.example_shape)
    best = None
    for axis in range(rank - 1, 0, -1):
        model = CompiledModel(lower(student, thin, axis), impl)
        if best is None or model._native.streamed_ops > best._native.streamed_ops:
            best = model
    return best


def load_model(path: str | os.PathLike, impl: str = "auto") -> CompiledModel:
    """Load an artifact written by :meth:`CompiledModel.save` (checked before it runs)."""
    return CompiledModel(artifact.load(path), impl)

"""``CompiledModel``: a lowered student running on the native FBCK runtime."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import _fbck, artifact
from .lower import Program, lower


def _native_model(
    programs: list[Program], impl: str, data: bytes | None = None, fusion: list[str] | None = None
):
    """The C++ runtime's model (the loader of the C API and the CLI), from the artifact bytes:
    ``data`` when the programs came from a file, else the programs written exactly (float32).
    ``fusion``: the runtime's fusion rules to apply (all by default; they never change a float)."""
    if data is None:
        data = artifact.serialize(programs, "float32")
    rules = _fbck.Model.fusion_rules() if fusion is None else list(fusion)
    return _fbck.Model.from_bytes(data, impl, rules)


def _as_input(
    x: Any, shape: list[int], what: str = "input", check_finite: bool = True
) -> tuple[np.ndarray, bool, bool]:
    """(float32 contiguous batch, was torch, had no batch axis) with clear errors. The native
    ``run`` checks finiteness itself (cheaper), so ``__call__`` passes ``check_finite=False``."""
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
    if check_finite and not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr, is_torch, single


class CompiledModel:
    """A student lowered at one or more depth options, running on native kernels (one call per
    batch). With several options, ``model(x, thin=k)`` picks one; they share their constants.

    Calls are thread-safe: the native programs are immutable and each call has its own workspace.

    Example::

        compiled = binarize.compile(student, thin=0)
        logits = compiled(features)          # numpy or torch, (B, 1, 32, 32) or (1, 32, 32)
        compiled.save("kws.bnn")
        same = binarize.load("kws.bnn")
        every = binarize.compile(student, thin="all")
        fast = every(features, thin=3)
    """

    def __init__(
        self,
        programs: Program | list[Program],
        impl: str = "auto",
        data: bytes | None = None,
        fusion: list[str] | None = None,
    ) -> None:
        programs = [programs] if isinstance(programs, Program) else list(programs)
        self.programs = {int(p.meta.get("thin", 0)): p for p in programs}
        if len(self.programs) != len(programs):
            raise artifact.ArtifactError("two programs for the same depth option")
        self.default_thin = int(programs[0].meta.get("thin", 0))
        self._model = _native_model(programs, impl, data, fusion)
        self._native = {k: self._model.program(k) for k in self.programs}

    def _pick(self, thin: int | None) -> int:
        thin = self.default_thin if thin is None else thin
        if thin not in self.programs:
            raise ValueError(f"depth option {thin} was not compiled; options: {self.thin_options}")
        return thin

    # -- properties ------------------------------------------------------------------------------
    @property
    def program(self) -> Program:
        """The default option's program."""
        return self.programs[self.default_thin]

    @property
    def thin_options(self) -> list[int]:
        return sorted(self.programs)

    @property
    def thin(self) -> int:
        return self.default_thin

    @property
    def input_shape(self) -> list[int]:
        return list(self.program.values[self.program.input])

    @property
    def output_shape(self) -> list[int]:
        return list(self.program.values[self.program.output])

    @property
    def impl(self) -> str:
        """The kernel implementation in use ("avx2", "neon", "ref"...)."""
        return self._native[self.default_thin].impl

    def size_bytes(self, storage: str = artifact.DEFAULT_STORAGE) -> int:
        """Size of the artifact :meth:`save` writes: the deployed storage figure."""
        return artifact.artifact_size(list(self.programs.values()), storage)

    # -- running ---------------------------------------------------------------------------------
    def __call__(self, x: Any, thin: int | None = None) -> Any:
        native = self._native[self._pick(thin)]
        arr, is_torch, single = _as_input(x, self.input_shape, check_finite=False)
        y = native.run(arr)  # raises ValueError on NaN / inf
        if single:
            y = y[0]
        return torch.from_numpy(y) if is_torch else y

    def stream(self, thin: int | None = None) -> Stream:
        """Frame-by-frame execution for one utterance; see :class:`Stream`."""
        thin = self._pick(thin)
        if self.programs[thin].time_axis < 1:
            raise ValueError("this model's input has no time axis to stream over")
        return Stream(self, thin)

    # -- storage ---------------------------------------------------------------------------------
    def save(
        self,
        path: str | os.PathLike,
        storage: str = artifact.DEFAULT_STORAGE,
        overwrite: bool = False,
    ) -> int:
        """Write the deployable artifact (backends/README.md "Artifact format"), which the C API
        and the ``fbck_run`` CLI read as well. ``storage`` picks how the full-precision constants
        are stored (:data:`binarize.backends.artifact.STORAGE`). Returns its size in bytes."""
        return artifact.save(list(self.programs.values()), path, storage, overwrite)

    def __repr__(self) -> str:
        return (
            f"CompiledModel(options={self.thin_options}, impl={self.impl}, "
            f"input={self.input_shape}, output={self.output_shape})"
        )


class Stream:
    """Feed an utterance frame by frame; the memory blocks keep their context as state.

    ``push(frames)`` takes ``(1, ..., n, ...)`` with ``n`` new frames on the input's time axis
    (or without the batch axis) and returns the output frames that became ready (for models with a
    per-frame output) or None; ``finish()`` returns the logits, equal to the whole-utterance call.
    """

    def __init__(self, model: CompiledModel, thin: int) -> None:
        self.model = model
        self.program = model.programs[thin]
        self._program_native = model._native[thin]
        self._native = self._program_native.stream()
        self._lock = threading.Lock()
        self._returned = 0
        self._torch = False

    def push(self, frames: Any) -> Any:
        shape = list(self.model.input_shape)
        t = self.program.time_axis - 1
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
        return self._program_native.output_time_axis

    def finish(self) -> Any:
        """End the utterance; returns the model output (as the whole-utterance call would)."""
        with self._lock:
            self._native.finish()
            y = self._native.output()[0]
        return torch.from_numpy(y) if self._torch else y

    @property
    def frames_in(self) -> int:
        return self._native.frames_in


def _lower_streamable(student, thin: int, time_axis: int | None, impl: str) -> Program:
    """Lower at ``thin``; without a given time axis pick the input axis along which the most ops
    run frame by frame (the memory blocks' time), the last one on a tie."""
    if time_axis is not None:
        return lower(student, thin, time_axis)
    best, best_count = None, -1
    for axis in range(len(student.example_shape) - 1, 0, -1):
        program = lower(student, thin, axis)
        count = _native_model([program], impl).program(program.meta["thin"]).streamed_ops
        if count > best_count:
            best, best_count = program, count
    return best


def compile_model(
    student, thin: int | str | list[int] = 0, impl: str = "auto", time_axis: int | None = None
) -> CompiledModel:
    """Lower ``student`` at depth option ``thin`` (an int, a list, or ``"all"``) and load it on the
    native runtime.

    ``impl`` picks the kernels ("auto": the best this CPU supports; "ref", "avx2", "neon");
    ``time_axis`` is the input's time axis, used for streaming (by default the axis the memory
    blocks run along).
    """
    options = (
        student.thin_options if thin == "all" else [thin] if isinstance(thin, int) else list(thin)
    )
    if not options:
        raise ValueError("no depth option to compile")
    return CompiledModel([_lower_streamable(student, k, time_axis, impl) for k in options], impl)


def load_model(path: str | os.PathLike, impl: str = "auto") -> CompiledModel:
    """Load an artifact written by :meth:`CompiledModel.save` (checked before it runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no artifact at {path}")
    data = path.read_bytes()
    return CompiledModel(artifact.deserialize(data), impl, data)

"""``binarize.convert``: any FSMN-like model plus its FP teacher -> a trainable BiFSMNv2 student."""

from __future__ import annotations

import copy
import os
import traceback
import warnings

import torch
from torch import Tensor, fx, nn

from binarize import passes
from binarize.errors import ConversionError, DeadLayerWarning, TeacherMismatchError
from binarize.passes.graph import flatten_nodes

from .config import BinarizeConfig
from .model import BinarizedModel, LayerInfo, logits_of
from .signs import sign_statistics


def _pair_blocks(student: passes.FSMNStructure, teacher: passes.FSMNStructure) -> list[int]:
    """Student block j <- teacher block j; a deeper teacher is paired evenly
    (``floor((j + 1) * N_t / N_s) - 1``), as in BiFSMN."""
    ns, nt = len(student.blocks), len(teacher.blocks)
    if nt < ns:
        raise TeacherMismatchError(
            f"the teacher has {nt} FSMN blocks and the student {ns}: every student block needs a "
            'teacher block at its depth; use a teacher at least as deep, or distill="none"'
        )
    pairing = [(j + 1) * nt // ns - 1 for j in range(ns)]
    for j, tj in enumerate(pairing):
        s_shape = student.blocks[j].output.meta["tensor_meta"].shape
        t_shape = teacher.blocks[tj].output.meta["tensor_meta"].shape
        if tuple(s_shape) != tuple(t_shape):
            raise TeacherMismatchError(
                f"student block {j} ({student.blocks[j].scope or 'block'}) outputs "
                f"{tuple(s_shape)} but its paired teacher block {tj} "
                f"({teacher.blocks[tj].scope or 'block'}) outputs {tuple(t_shape)}: FID needs "
                'equal widths; use a teacher of the same width, or distill="none"'
            )
    return pairing


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def convert(
    model: nn.Module,
    teacher: nn.Module | None = None,
    config: BinarizeConfig | None = None,
    *,
    example_input: Tensor | None = None,
) -> BinarizedModel:
    """Turn an FSMN-like ``model`` into a 1-bit BiFSMNv2 student distilled from ``teacher``.

    The model is traced with torch.fx; its FC projections (``Linear``, 1x1 convs) and FSMN memory
    blocks are found by graph shape and replaced by binary layers (LPB by default), its repeated
    blocks become thinnable (DTA) and their outputs are distilled from the teacher's (FID). Neither
    ``model`` nor ``teacher`` is modified: the student is built from a copy, and a frozen copy of
    the teacher rides along. ``example_input`` fixes the input shape (its first sample is traced);
    without it the usual KWS feature shapes are tried. Every binary layer is then checked on it
    (a random one when it was guessed) at every depth option: a layer whose input has one sign
    only gets a :class:`DeadLayerWarning` (with ``config.strict`` a ConversionError); pass a
    batch of real features for the check to mean most.

    Example::

        import binarize
        student = binarize.convert(model, teacher)         # model: FP copy to binarize
        loss = student.loss(features, labels)              # CE over depth options + FID
        print(student.summary())

    Raises:
        NoFSMNStructureError: the model has no FSMN memory block.
        TraceError: torch.fx cannot trace the forward (the message names the code).
        TeacherMismatchError: the teacher's blocks cannot be paired with the student's.
        ConversionError / ValueError: a config naming an unknown binarizer or layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module or None, got {type(teacher).__name__}")
    config = (config or BinarizeConfig()).validate()
    if example_input is None:
        example_input = passes.infer_example_input(model)
        generator = torch.Generator().manual_seed(0)
        check_input = torch.randn(example_input.shape, generator=generator)
    elif not isinstance(example_input, Tensor):
        raise TypeError("example_input must be a torch.Tensor")
    else:
        check_input = example_input.detach()
    example = example_input.detach()[:1].clone()
    if example.shape[0] == 0:
        raise ValueError("example_input must hold at least one sample")

    try:
        return _convert(model, teacher, config, example, check_input)
    except ConversionError:
        raise
    except (SyntaxError, NameError, AttributeError, TypeError, RuntimeError, ValueError) as exc:
        # A graph binarize built from the user's code failed: say whose code and what to try.
        raise ConversionError(
            f"binarize could not rebuild {type(model).__name__}.forward as a student: "
            f"{type(exc).__name__}: {exc}\n  in: {_where(exc)}\n  Keep the forward to tensor "
            "operations on the input (sizes from x.shape are fine); give BinarizeConfig("
            "leaf_modules=[...]) for a submodule binarize should not look into, or "
            "concrete_args={'arg': value} for an extra argument; please report the model if it "
            "still fails."
        ) from exc


def _where(exc: BaseException) -> str:
    """Where a conversion error came from: the line of generated code, else the innermost frame
    of the user's code (outside torch and binarize)."""
    if isinstance(exc, SyntaxError) and exc.text:
        return f"generated code line {exc.lineno}: {exc.text.strip()!r}"
    skip = (
        os.path.dirname(torch.__file__),
        os.path.dirname(passes.__file__),
        os.path.dirname(__file__),
    )
    for fr in reversed(traceback.extract_tb(exc.__traceback__)):
        if "<eval_with_key>" in fr.filename or not fr.filename.startswith(skip):
            return f"{fr.filename}:{fr.lineno} ({fr.name}): {(fr.line or '').strip()!r}"
    return "(no frame outside torch and binarize)"


def _convert(
    model: nn.Module,
    teacher: nn.Module | None,
    config: BinarizeConfig,
    example: Tensor,
    check_input: Tensor,
) -> BinarizedModel:
    # The student: analyse a private copy, swap in binary layers, make it thinnable, split it.
    source = copy.deepcopy(model)
    structure = passes.student_structure(source, example, config.leaf_modules, config.concrete_args)
    plans = passes.plan_layers(structure, config)
    passes.apply_plan(structure.gm, plans, config)
    passes.make_eval_exact(structure.gm)
    num_blocks = len(structure.blocks)
    limit = passes.max_thin_options(num_blocks)
    options = config.thin_options or limit
    if options > limit:
        raise ConversionError(
            f"thin_options={options} but the backbone has {num_blocks} blocks, which allows at most "
            f"{limit} depth options"
        )
    weights = (
        list(config.option_weights) if config.option_weights else [2.0**-k for k in range(options)]
    )
    if len(weights) != options:
        raise ConversionError(f"option_weights has {len(weights)} entries for {options} options")
    thin = passes.insert_switches(
        structure.gm, structure.blocks, options, inner_norms=config.thin_inner_norms
    )
    option_blocks = [passes.blocks_of_option(num_blocks, k) for k in range(options)]
    placed = passes.place_activations(
        structure.gm,
        structure.blocks,
        thin,
        option_blocks,
        {p.name: p.binarizer for p in plans if p.binarizer is not None},
        example,
    )
    parts = passes.split(structure.gm, structure.blocks, thin)

    # The teacher: a frozen copy, traced to expose its block outputs.
    teacher_features = None
    pairing = list(range(num_blocks))
    if teacher is not None:
        frozen = copy.deepcopy(teacher).eval().requires_grad_(False)
        t_structure = passes.teacher_structure(
            frozen, example, config.leaf_modules, config.concrete_args
        )
        if config.distill != "none":
            pairing = _pair_blocks(structure, t_structure)
        teacher_features = passes.expose_outputs(
            t_structure.gm, [b.output for b in t_structure.blocks], _logits_node(t_structure)
        ).eval()

    layers = [
        LayerInfo(
            p.name,
            p.kind,
            p.binarizer,
            p.reason + (f"; input: {placed[p.name]}" if p.name in placed else ""),
        )
        for p in plans
    ]
    student = BinarizedModel(
        parts.prefix,
        parts.blocks,
        parts.suffix,
        parts.num_carried,
        option_blocks,
        weights,
        teacher_features,
        pairing,
        config,
        layers,
        example,
        _param_bytes(model),
        parts.side_shapes,
        parts.assemble,
    )
    if teacher_features is not None:
        _check_logits(student, teacher_features, example)
    _check_alive(student, check_input, config.strict)
    return student.train()  # ready to train, as torch.ao's prepare_qat


def _logits_node(structure: passes.FSMNStructure) -> fx.Node:
    """The model's prediction: its first output that depends on the last memory block."""
    graph = structure.gm.graph
    main = passes.main_path(graph, structure.memory_nodes)
    leaves = flatten_nodes(next(n for n in graph.nodes if n.op == "output").args[0])
    return next((n for n in leaves if n in main), leaves[0])


def _check_alive(student: BinarizedModel, x: Tensor, strict: bool) -> None:
    """Warn (or refuse) when a binary layer's input has one sign only at some depth option."""
    dead = [s for s in sign_statistics(student, x) if s.dead]
    if not dead:
        return
    listed = ", ".join(
        f"{s.layer} at option {s.option} (all {'+1' if s.plus_fraction else '-1'})" for s in dead
    )
    message = (
        f"{len(dead)} binary layer input(s) have one sign only on the example input, so those "
        f"layers output a constant: {listed}. A sign-only binarizer after a ReLU or another "
        "non-negative op does this; keep such a layer full precision (keep_fp=[...]), use a "
        "binarizer with a learnable threshold (lpb), or pass real features as example_input if "
        "this one is not representative"
    )
    if strict:
        raise ConversionError(message)
    warnings.warn(message, DeadLayerWarning, stacklevel=3)


@torch.no_grad()
def _check_logits(student: BinarizedModel, teacher: nn.Module, example: Tensor) -> None:
    was = student.training
    student.eval()
    try:
        s = logits_of(student._run(example, 0, collect=False, logits_only=True)[0])
        t = logits_of(teacher(example)[0])
    finally:
        student.train(was)
    if s.shape != t.shape:
        raise TeacherMismatchError(
            f"the teacher's output {tuple(t.shape)} and the student's {tuple(s.shape)} differ; they "
            "must predict the same classes"
        )

"""``make demo``: train the FP D-FSMN teacher, convert and distil BiFSMNv2, evaluate every depth
option in PyTorch and compiled to the native kernels, on the test set and on voices no split
uses, and write a report (markdown + PNG).

    python -m examples.kws.demo                  # synthetic speech, sized for ~15 min on 2 cores
    python -m examples.kws.demo --seeds 0 1 2    # three training seeds: mean ± std in the report
    python -m examples.kws.demo --full           # the larger synthetic set and longer training
    python -m examples.kws.demo --data ~/speech_commands_v0.01 --task v1-12
    torchrun --nproc_per_node 2 -m examples.kws.demo   # data-parallel training (gloo on CPU)

Runs are cached under ``--runs`` (resumed when interrupted, reused when finished); ``--overwrite``
retrains.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from collections.abc import Sequence

import torch

from binarize import BinarizeConfig, available_binarizers

from .pipeline import (
    DEMO_STUDENT_EPOCHS,
    DEMO_TEACHER_EPOCHS,
    DEMO_VIEWS,
    DataConfig,
    distill_student,
    evaluate,
    load_data,
    run_root,
    student_recipe,
    student_run_name,
    teacher_recipe,
    train_teacher,
    write_report,
)
from .train import init_distributed, rank

QUICK = {  # the same steps as DEMO_*_EPOCHS on the clean clips alone
    "size": "small",
    "views": DEMO_VIEWS,
    "teacher_epochs": DEMO_TEACHER_EPOCHS // (1 + DEMO_VIEWS),
    "student_epochs": DEMO_STUDENT_EPOCHS // (1 + DEMO_VIEWS),
}
FULL = {"size": "large", "teacher_epochs": 40, "student_epochs": 40, "views": 0}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m examples.kws.demo",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data", default=None, help="a Speech Commands folder (default: synthetic speech)"
    )
    p.add_argument("--task", default="v1-12", choices=["v1-12", "v2-12", "v2-35"])
    p.add_argument(
        "--features", default="reference", help="feature preset (reference, logmel40, mfcc40)"
    )
    p.add_argument(
        "--full", action="store_true", help="the larger synthetic set and longer training"
    )
    p.add_argument("--size", default=None, help="synthetic dataset size (small, large)")
    p.add_argument(
        "--views",
        type=int,
        default=None,
        help="augmented copies of each training clip (noise, shift, gain) added to the training "
        "set, computed once and cached; the epochs count passes over the enlarged set",
    )
    p.add_argument("--teacher-epochs", type=int, default=None)
    p.add_argument("--student-epochs", type=int, default=None)
    p.add_argument("--binarizer", default="lpb", choices=available_binarizers())
    p.add_argument(
        "--fp-front-end",
        dest="binarize_convs",
        action="store_false",
        help="keep the second front-end conv full precision (the reference binarizes it)",
    )
    p.add_argument(
        "--student-dropout",
        type=float,
        default=None,
        help="the student's Dropout probability (default: the recipe's, DEMO_STUDENT_DROPOUT)",
    )
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument(
        "--seeds",
        "--seed",
        dest="seeds",
        type=int,
        nargs="+",
        default=[0],
        help="training seeds (initialisation, batch order), one teacher and student each",
    )
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic dataset")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--runs", default="runs", help="folder for checkpoints")
    p.add_argument("--out", default="reports/demo", help="folder for the report")
    p.add_argument(
        "--cache-dir", default=None, help="dataset/feature cache (default ~/.cache/binarize)"
    )
    p.add_argument("--overwrite", action="store_true", help="retrain even if finished runs exist")
    return p.parse_args(argv)


def cpu_minutes() -> dict[str, float]:
    """CPU time used so far, by this process (all its threads) and by its finished child processes
    (the dataset generator's workers): on a shared machine, the load-independent cost."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "process": round((own.ru_utime + own.ru_stime) / 60, 1),
        "children": round((kids.ru_utime + kids.ru_stime) / 60, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preset = FULL if args.full else QUICK
    size = args.size or preset["size"]
    teacher_epochs = args.teacher_epochs or preset["teacher_epochs"]
    student_epochs = args.student_epochs or preset["student_epochs"]
    if args.threads:
        torch.set_num_threads(args.threads)
    init_distributed()
    started = time.time()

    views = preset["views"] if args.views is None else args.views
    data = load_data(
        DataConfig(
            args.data, args.task, args.features, size, args.data_seed, args.cache_dir, views=views
        )
    )
    if rank() == 0:
        print(data.describe(), flush=True)
    minutes = {"data": round((time.time() - started) / 60, 1)}
    bcfg = BinarizeConfig(binarizer=args.binarizer, binarize_convs=args.binarize_convs)
    evals, runs_info = [], []
    for seed in args.seeds:
        runs = run_root(args.runs, data, args.task, args.features, seed)
        t0 = time.time()
        teacher_cfg = teacher_recipe(teacher_epochs, args.batch_size, seed, args.workers)
        teacher, teacher_run = train_teacher(data, teacher_cfg, runs / "teacher", args.overwrite)
        t1 = time.time()
        student_cfg = student_recipe(student_epochs, args.batch_size, seed, args.workers)
        if args.student_dropout is not None:
            student_cfg = dataclasses.replace(student_cfg, dropout=args.student_dropout)
        name = student_run_name(f"student-{args.binarizer}", bcfg, student_cfg)
        student, student_run = distill_student(
            data, teacher, bcfg, student_cfg, runs / name, args.overwrite
        )
        t2 = time.time()
        if rank() != 0:
            continue
        if seed == args.seeds[0]:
            print(student.summary(), flush=True)
        evals.append(evaluate(student, teacher, data, seed=seed))
        t3 = time.time()
        minutes[f"seed {seed}"] = {
            "teacher": round((t1 - t0) / 60, 1),
            "student": round((t2 - t1) / 60, 1),
            "evaluation": round((t3 - t2) / 60, 1),
        }
        runs_info.append(
            {
                "seed": seed,
                "teacher_run": str(runs / "teacher"),
                "student_run": str(runs / name),
                "teacher_best_val": teacher_run["best"],
                "student_best_val": student_run["best"],
                "reused": {"teacher": teacher_run["reused"], "student": student_run["reused"]},
            }
        )
    if rank() != 0:
        return 0
    minutes["total"] = round((time.time() - started) / 60, 1)
    minutes["cpu"] = cpu_minutes()
    extra = {
        "teacher_train": {k: v for k, v in teacher_cfg.__dict__.items() if k != "seed"},
        "student_train": {k: v for k, v in student_cfg.__dict__.items() if k != "seed"},
        "binarizer": args.binarizer,
        "binarizer_options": bcfg.binarizer_options,
        "views": views,
        "minutes": minutes,
        "threads": torch.get_num_threads(),
        "runs": runs_info,
    }
    title = f"BiFSMNv2 ({args.binarizer}) on {args.task}"
    report = write_report(args.out, title, data, evals, extra)
    print(report.read_text())
    print(f"report: {report}  plot: {report.parent / 'accuracy.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

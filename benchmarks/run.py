"""python -m benchmarks.run [--quick] [--smoke] [--out reports/bench] [--impl auto|avx2|...]
[--skip-arm] [--skip-lce] [--skip-bnnlab] [--runs runs]

Measures the 1-bit KWS model against its FP32 teacher side by side in one run and writes
OUT/bench.md (the tables), OUT/bench.json (every number) and OUT/bench.png.

  --quick  fewer repetitions, no torch.compile rows (compiling takes minutes): under 10 minutes
           on 2 cores with the ARM counts cached (the first run counts them: about 1 minute more)
  --smoke  tiny repetitions: proves every path runs (`make test` runs `--quick --smoke`);
           implies --skip-lce and --skip-bnnlab unless --lce / --bnnlab is given (both peers
           live in virtual environments of their own, created on demand by a full run)
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import end_to_end, int8, kernels, report, roofline, storage
from .common import Budget, load_average, machine_info
from .models import add_conv_variant, conv_label, load_models

PROFILE_GROUPS = {
    "conv2d": "FP conv",
    "linear": "FP linear",
    "binary_linear": "binary linear",
    "binary_conv2d": "binary conv",
    "memory": "memory",
    "binary_memory": "memory",
    "permute": "permute",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default="reports/bench")
    p.add_argument("--impl", default="auto", help="FBCK kernels for the compiled model")
    p.add_argument("--skip-arm", action="store_true")
    p.add_argument("--skip-lce", action="store_true")
    p.add_argument("--lce", action="store_true", help="run LCE even with --smoke")
    p.add_argument("--skip-bnnlab", action="store_true")
    p.add_argument("--bnnlab", action="store_true", help="run bnn-lab even with --smoke")
    p.add_argument("--runs", default="runs", help="where `make demo` keeps its trained runs")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--no-variants",
        action="store_true",
        help="skip the undistilled student with the other front-end conv choice",
    )
    return p.parse_args(argv)


def profile(models, e2e: dict, reps: int) -> dict[int, dict[str, float]]:
    """Per-op wall time of the compiled model (1 utterance), grouped by op kind, in us."""
    import binarize

    x = models.x1.numpy()
    out = {}
    for label, st in models.students().items():
        compiled = binarize.compile(st, thin="all", impl=e2e["impl"])
        for k in compiled.thin_options:
            groups: dict[str, float] = {}
            for _, kind, ns in compiled._native[k].profile(x, reps):
                g = PROFILE_GROUPS.get(kind, "element-wise")
                groups[g] = groups.get(g, 0.0) + ns / 1e3
            out[f"{k}" + (f" ({label})" if label else "")] = groups
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    quick = args.quick or args.smoke
    budget = Budget.make(quick, args.smoke)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    from binarize.backends import _fbck

    res: dict[str, object] = {
        "command": "python -m benchmarks.run "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
    }
    impls = [i for i in ("ref", "avx2", "avx512", "neon") if i in _fbck.available_impls()]

    log("models ...")
    models = load_models(args.runs, args.batch)
    if not args.no_variants:
        add_conv_variant(models)
    res["models"] = f"{models.source}; main student: {conv_label(models.binarize_convs)}"
    res["models_info"] = models.info
    res["models_trained"] = models.trained
    log(f"  {models.source}")

    log("end to end ...")
    res["e2e"] = end_to_end.run(models, budget, args.impl, with_compile=not quick, log=log)
    res["profile"] = profile(models, res["e2e"], 3 if args.smoke else 200)
    res["accuracy"] = end_to_end.accuracies(models, args.impl)
    log("INT8 peer (ONNX Runtime static quantization) ...")
    try:
        res["int8"] = int8.run(models, budget, log=log)
        res["e2e"]["rows"].insert(3, res["int8"]["row"])
        if res["int8"]["accuracy"] is not None:
            res["accuracy"]["int8"] = res["int8"]["accuracy"]
    except Exception as exc:  # the report says why; the rest goes on
        res["int8"] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
    log("streaming ...")
    res["streaming"] = end_to_end.streaming(models, budget, args.impl)

    log("kernels ...")
    res["kernels"] = kernels.run(impls, samples=3 if args.smoke else 30, batch=args.batch, log=log)
    res["roofline"] = roofline.compute(
        models, res["e2e"], res["kernels"], res["e2e"]["impl"], res["machine"]["cpu"]
    )

    log("storage ...")
    res["storage"] = storage.run(models, args.impl, log=log)

    if not args.skip_arm:
        log("ARM (qemu instruction counts) ...")
        from . import arm

        try:
            res["arm"] = arm.run(models, smoke=args.smoke, log=log)
        except Exception as exc:
            res["arm"] = {"error": f"{type(exc).__name__}: {exc}"[:800]}
    if not args.skip_arm:
        log("Deploy: the aarch64 CLI end to end (qemu instruction counts) ...")
        from . import deploy

        try:
            res["deploy"] = deploy.run(models, smoke=args.smoke, log=log)
        except Exception as exc:
            res["deploy"] = {"error": f"{type(exc).__name__}: {exc}"[:800]}
    if not args.skip_lce and (not args.smoke or args.lce):
        log("Larq Compute Engine ...")
        from . import lce

        res["lce"] = lce.run(
            impls, reps=20 if args.smoke else 200, samples=3 if args.smoke else 30, log=log
        )
        if "error" in res["lce"]:
            log("  " + res["lce"]["error"])
    else:
        res["lce"] = {"error": "skipped (--skip-lce" + (", --smoke)" if args.smoke else ")")}
    if not args.skip_bnnlab and (not args.smoke or args.bnnlab):
        log("bnn-lab ...")
        from . import bnnlab

        res["bnnlab"] = bnnlab.run(impls, samples=3 if args.smoke else 30, log=log)
        if "error" in res["bnnlab"]:
            log("  " + res["bnnlab"]["error"])
    else:
        res["bnnlab"] = {"error": "skipped (--skip-bnnlab" + (", --smoke)" if args.smoke else ")")}

    res["load_average_end"] = [round(v, 2) for v in load_average()]
    res["minutes"] = round((time.time() - started) / 60, 2)
    md = report.markdown(res)
    (out / "bench.md").write_text(md)
    (out / "bench.json").write_text(report.to_json(res))
    report.plot(res, out / "bench.png")
    print(md)
    print(
        f"wrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'bench.png'} "
        f"in {res['minutes']} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

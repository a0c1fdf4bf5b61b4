"""Runs inside the Larq Compute Engine virtual environment (TensorFlow 2.16, tf-keras, larq 0.13,
larq-compute-engine 0.16; no torch): builds Keras models of larq QuantConv2D 1x1 layers with the
given binary shapes, converts them with ``larq_compute_engine.convert_keras_model`` and times them
with LCE's interpreter on 1 thread. Prints one JSON object.

Each shape (P positions, K -> N) is timed as a chain: 1 layer, and 1 + 2R layers alternating
K -> N and N -> K (each layer's ste_sign input quantizer lets the converter write bit-packed
output from the layer before, as in a BNN); the per-layer time is the difference over 2R, so the
interpreter's call overhead and the first layer's float packing cancel out.

    python benchmarks/lce_worker.py '[{"name": "...", "P": 8, "K": 128, "N": 256}]' [reps]
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    shapes = json.loads(sys.argv[1])
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    chain = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    import larq as lq
    import larq_compute_engine as lce
    import numpy as np
    import tensorflow as tf
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    kw = dict(
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
        use_bias=False,
    )

    def model(h, w, k, n, layers):
        inp = tf.keras.Input((h, w, k), batch_size=1)
        x = inp
        for i in range(layers):
            x = lq.layers.QuantConv2D(n if i % 2 == 0 else k, 1, **kw)(x)
        return tf.keras.Model(inp, x)

    def timed(fb, x):
        it = Interpreter(fb, num_threads=1)
        for _ in range(10):
            it.predict(x)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            it.predict(x)
            ts.append((time.perf_counter_ns() - t0) / 1e3)
        return statistics.median(ts)

    out = {
        "versions": {
            "tensorflow": tf.__version__,
            "larq": lq.__version__,
            "larq_compute_engine": getattr(lce, "__version__", "0.16"),
        },
        "results": [],
    }
    for s in shapes:
        p, k, n = s["P"], s["K"], s["N"]
        h = s.get("H", 1)
        w = p // h
        x = np.random.default_rng(0).standard_normal((1, h, w, k)).astype(np.float32)
        fb1 = lce.convert_keras_model(model(h, w, k, n, 1))
        fbn = lce.convert_keras_model(model(h, w, k, n, 1 + 2 * chain))
        t1, tn = timed(fb1, x), timed(fbn, x)
        per_layer = (tn - t1) / (2 * chain)
        out["results"].append(
            {
                **s,
                "t_one_us": t1,
                "t_chain_us": tn,
                "chain": 1 + 2 * chain,
                "per_layer_us": per_layer,
                "bmac_per_us": p * k * n / per_layer if per_layer > 0 else None,
                "flatbuffer_bytes": len(fb1),
            }
        )
    print("LCE_JSON " + json.dumps(out))


if __name__ == "__main__":
    main()

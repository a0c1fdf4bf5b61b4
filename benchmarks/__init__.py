"""Benchmarks of the 1-bit KWS model against its FP32 teacher, the hardware and a BNN engine.

    python -m benchmarks.run [--quick] [--smoke] [--out reports/bench]

See benchmarks/README.md for what each part measures and how.
"""

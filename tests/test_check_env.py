"""The environment check `make test` runs first: it names the broken package and the fix."""

from __future__ import annotations

import check_env


def test_lock_pins_the_stack_exactly():
    pins = check_env.read_lock()
    assert pins["torch"] == "2.11.0" and pins["torchaudio"] == "2.11.0"
    assert pins["torchvision"] == "0.26.0"
    for name in ("numpy", "timm", "onnxruntime", "nanobind", "triton", "safetensors"):
        assert name in pins, f"{name} is not pinned in requirements.lock"
    assert check_env.version_problems(pins) == []


def test_a_mismatched_or_missing_package_is_named():
    problems = check_env.version_problems({"torch": "0.0.1", "no-such-package-xyz": "1.0"})
    assert problems[0] == "no-such-package-xyz is not installed (requirements.lock pins 1.0)"
    assert problems[1].startswith("torch 2.11.0 is installed but requirements.lock pins 0.0.1")


def test_a_failing_import_prints_one_line_with_the_fix(monkeypatch, capsys):
    def broken():
        raise OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what")

    monkeypatch.setattr(check_env, "IMPORTS", [("torchaudio", broken)])
    assert check_env.main() == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("environment check failed: torchaudio fails: OSError: libtorchaudio")
    assert line.endswith(check_env.FIX)


def test_a_healthy_environment_passes(capsys):
    assert check_env.main() == 0
    assert capsys.readouterr().out.startswith("environment ok:")

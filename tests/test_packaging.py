"""Packaging and layering: one import name (`binarize`), and layers that import only downwards.

The repo keeps its top-level folders (binarize/, passes/, backends/) but installs them as
`binarize`, `binarize.passes` and `binarize.backends`. Inside the package, modules sit in layers
(bottom to top, like torch.ao: torch.ao.nn, quantization/fx, quantize_fx) and no module imports
one above it, nor hides a binarize import inside a function to dodge a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = {"binarize": REPO / "binarize", "binarize.passes": REPO / "passes",
           "binarize.backends": REPO / "backends"}  # fmt: skip

# Bottom to top. A module's layer is that of the longest prefix listed here.
LAYERS: list[list[str]] = [
    ["binarize.errors", "binarize.nn", "binarize.distill", "binarize.config"],
    ["binarize.passes", "binarize.summary", "binarize.signs", "binarize.model"],
    ["binarize.backends"],
    ["binarize.convert", "binarize"],
]


def layer_of(module: str) -> int:
    best, level = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    assert level is not None, f"{module} is in no layer: add it to LAYERS"
    return level


def package_modules() -> dict[str, Path]:
    """Installed module name -> source file, for every Python file of the package."""
    mods = {}
    for pkg, root in SOURCES.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = path
    return mods


def imported_binarize_modules(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported binarize module, line, inside a function?) for each import of binarize code."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            func = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, func) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                # `from pkg import name`: the name may be a submodule; resolved against the
                # package's modules below
                for a in child.names:
                    out.append((f"{mod}.{a.name}", child.lineno, func))
            visit(child, func)

    visit(tree, False)
    mods = package_modules()
    result = []
    for target, line, func in out:
        if not (target == "binarize" or target.startswith("binarize.")):
            continue
        while target not in mods and "." in target:
            target = target.rpartition(".")[0]
        result.append((target, line, func))
    return result


def test_every_module_imports_only_its_own_layer_or_below():
    problems = []
    for name, path in package_modules().items():
        own = layer_of(name)
        for target, line, _ in imported_binarize_modules(name, path):
            if layer_of(target) > own:
                problems.append(f"{path.relative_to(REPO)}:{line}: {name} imports {target}")
    assert not problems, "imports that point up the layers:\n" + "\n".join(problems)


def test_no_binarize_import_hides_inside_a_function():
    hidden = [
        f"{path.relative_to(REPO)}:{line}: imports {target} inside a function"
        for name, path in package_modules().items()
        for target, line, func in imported_binarize_modules(name, path)
        if func
    ]
    assert not hidden, "\n".join(hidden)


def test_layering_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from binarize.backends import lower\n")
    found = imported_binarize_modules("binarize.nn.bad", bad)
    assert found == [("binarize.backends.lower", 2, True)]
    assert layer_of("binarize.backends.lower") > layer_of("binarize.nn.bad")


def test_only_binarize_is_a_top_level_name_outside_the_repo(tmp_path):
    code = (
        "import importlib.util as u, binarize.passes, binarize.backends._fbck\n"
        "print([n for n in ('passes', 'backends') if u.find_spec(n) is not None])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"
    fail = subprocess.run([sys.executable, "-c", "import passes"], cwd=tmp_path,
                          capture_output=True, text=True)  # fmt: skip
    assert fail.returncode != 0 and "No module named 'passes'" in fail.stderr


@pytest.mark.slow
def test_wheel_installs_one_top_level_package(tmp_path):
    """A real wheel of the repo (the CMake build is reused): `binarize/` and its dist-info only,
    with the native module inside the package and no C++ sources."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("binarize-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"binarize", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                    + ".dist-info"}  # fmt: skip
    assert any(n.startswith("binarize/backends/_fbck.") for n in names)
    assert "binarize/passes/memory.py" in names
    assert not [n for n in names if n.endswith((".cpp", ".h"))]

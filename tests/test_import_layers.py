"""No package cycle between `codeformer.face` and `codeformer.metrics`: read every import (module level and inside
functions, absolute and relative) with `ast` and check the two packages do not import each other both ways."""

from __future__ import annotations

import ast
from pathlib import Path

import codeformer

SRC = Path(codeformer.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Fully qualified `codeformer...` modules (or names) imported anywhere in the file at `path`."""
    package = "codeformer." + ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    package = package.rstrip(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "codeformer" or m.startswith("codeformer.")}


def package_imports(package: str) -> dict[str, set[str]]:
    """{file: its codeformer imports} for every .py file of `codeformer.<package>`."""
    return {str(p.relative_to(SRC)): imported_modules(p) for p in sorted((SRC / package).rglob("*.py"))}


def uses(imports: dict[str, set[str]], package: str) -> dict[str, list[str]]:
    """Files whose imports reach into `codeformer.<package>`, with those imports."""
    prefix = f"codeformer.{package}"
    return {f: sorted(m for m in mods if m == prefix or m.startswith(prefix + "."))
            for f, mods in imports.items() if any(m == prefix or m.startswith(prefix + ".") for m in mods)}


def test_the_import_reader_sees_relative_and_local_imports(tmp_path: Path) -> None:
    probe = SRC / "metrics" / "runner.py"
    assert "codeformer.dlib_models" in imported_modules(probe)  # module level
    assert "codeformer.face.review.ReviewOptions" in imported_modules(SRC / "cli.py")  # inside a function
    train_commands = imported_modules(SRC / "train" / "commands.py")
    assert any(m.startswith("codeformer.face") for m in train_commands)  # `from ..face.detection import ...`


def test_face_and_metrics_do_not_import_each_other_both_ways() -> None:
    face_to_metrics = uses(package_imports("face"), "metrics")
    metrics_to_face = uses(package_imports("metrics"), "face")
    assert not (face_to_metrics and metrics_to_face), (
        f"package cycle: face → metrics in {sorted(face_to_metrics)}, metrics → face in {metrics_to_face}")
    assert face_to_metrics  # the allowed direction is really in use (report, autow): the check is not vacuous
    assert not metrics_to_face

"""The README's "Architecture" picture, checked against the imports of every module."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hematovision"
LEAVES = {"errors", "files", "progress", "_version"}
TRAINING_STACK = {"models", "training", "export"}
# what each part may import (besides LEAVES): the two stacks joined by the artifact
ALLOWED = {
    "preprocess": set(),
    "artifact": {"preprocess", "data"},
    "data": {"preprocess"},
    "evaluation": set(),
    "differential": set(),
    "tables": {"differential"},
    "models": {"artifact", "preprocess"},
    "training": {"artifact", "data", "evaluation", "models", "preprocess"},
    "export": {"artifact", "data", "evaluation", "models", "preprocess"},
    "inference": {"artifact", "preprocess"},
    "smear": {"data", "differential", "inference", "preprocess"},
    "storage": set(),
    "fhir": set(),
    "pdf_report": {"differential"},
    # the lab's reviewed cells (storage) into a data set, and a model refitted on them
    "adapt": {"artifact", "data", "evaluation", "inference", "preprocess", "smear", "storage"},
    "web": {
        "artifact",
        "differential",
        "fhir",
        "inference",
        "pdf_report",
        "preprocess",
        "smear",
        "storage",
        "tables",
    },
}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def _imports(path: Path):
    """(part imported, names, is torch) for every import in a module, at any depth."""
    package = list(path.relative_to(PACKAGE).parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                yield (alias.name.split(".")[1] if top == "hematovision" else None), [], top
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level == 0:
                parts = (node.module or "").split(".")
                target = parts[1:] if parts[0] == "hematovision" else None
                yield (target[0] if target else ("" if target == [] else None)), names, parts[0]
                continue
            base = package[: len(package) - (node.level - 1)]
            target = base + [m for m in (node.module or "").split(".") if m]
            yield (target[0] if target else ""), names, "hematovision"


def _modules():
    return [p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_what_the_picture_allows(path):
    part = _part(path)
    if part in LEAVES | {"__init__", "__main__", "cli"}:
        return
    allowed = ALLOWED[part] | LEAVES | {part}
    for target, names, _top in _imports(path):
        if target is None:
            continue
        assert target != "", f"{path.name} imports the package __init__ from below: {names}"
        assert target in allowed, f"{part} may not import {target} (allowed: {sorted(allowed)})"


def test_the_serving_stack_never_imports_torch():
    for path in _modules():
        part = _part(path)
        if part in TRAINING_STACK or part in {"__init__", "__main__", "cli"}:
            continue
        tops = {top for _, _, top in _imports(path)}
        assert not tops & {"torch", "torchvision", "timm"}, path

"""The import layering (docs/architecture.md, "Layers"): every layer imports only from layers below."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# layer (a package or module, as a path prefix) -> the prefixes it must not import. One rule per folder:
# runtime helpers and data at the bottom (they share the data errors), then the model, training and adaptation,
# the method contract, the methods' packages and their registry, evaluation beside them, the online stage,
# the steps, and the shells (components, pipelines).
_METHODS = ("metaheac.method", "metaheac.linear", "metaheac.recommended", "metaheac.methods")
_ABOVE_DATA = ("metaheac.model", "metaheac.training", "metaheac.adaptation", *_METHODS, "metaheac.online",
               "metaheac.evaluation", "metaheac.steps")
FORBIDDEN = {
    "metaheac.runtime": _ABOVE_DATA,
    "metaheac.data": _ABOVE_DATA,
    "metaheac.model": ("metaheac.training", "metaheac.adaptation", *_METHODS, "metaheac.online", "metaheac.steps"),
    "metaheac.training": ("metaheac.adaptation", *_METHODS, "metaheac.online", "metaheac.steps"),
    "metaheac.adaptation": ("metaheac.training", *_METHODS, "metaheac.online", "metaheac.steps"),
    "metaheac.evaluation": ("metaheac.model", "metaheac.training", "metaheac.adaptation", *_METHODS,
                            "metaheac.online", "metaheac.steps"),
    # the method contract, then the methods' packages (training only through the contract), then the registry
    "metaheac.method": ("metaheac.linear", "metaheac.recommended", "metaheac.methods", "metaheac.online",
                        "metaheac.steps"),
    "metaheac.linear": ("metaheac.training", "metaheac.online", "metaheac.recommended", "metaheac.methods",
                        "metaheac.steps"),
    "metaheac.recommended": ("metaheac.training", "metaheac.online", "metaheac.methods", "metaheac.steps"),
    "metaheac.methods": ("metaheac.online", "metaheac.steps"),
    "metaheac.benchmark": ("metaheac.online", "metaheac.steps"),
    "metaheac.online": ("metaheac.training", "metaheac.steps", "components", "pipelines"),
    "metaheac.steps": ("components", "pipelines"),
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path) -> set[str]:
    """Every module `path` imports, lazily inside functions too (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package `level - 1` above the module's own
                package = module_name(path).split(".")[: -node.level]
                base = ".".join([*package, base]).strip(".")
            found.update([base, *(f"{base}.{alias.name}" for alias in node.names)])
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_files(layer: str) -> list[Path]:
    base = ROOT.joinpath(*layer.split("."))
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


@pytest.mark.parametrize("layer", FORBIDDEN)
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    files = layer_files(layer)
    assert files and all(f.exists() for f in files)
    wrong = [
        f"{module_name(f)} imports {name}"
        for f in files
        for name in sorted(imports(f))
        if any(within(name, above) for above in FORBIDDEN[layer])
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_late_import(tmp_path: Path) -> None:
    """The check reads imports inside functions too (as the old `model/store.py` workaround was)."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from metaheac.methods import method\n    return method\n")
    assert "metaheac.methods" in imports(source)


def test_parsing_method_names_does_not_import_torch() -> None:
    code = "import metaheac.method_names, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_method_names_are_the_registry_s() -> None:
    from metaheac.method_names import METHOD_NAMES
    from metaheac.methods import METHODS

    assert tuple(METHODS) == METHOD_NAMES
    assert all(spec.name == name for name, spec in METHODS.items())

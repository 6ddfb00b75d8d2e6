"""The package layout holds: no import cycles, the runtime never imports training code
(``models.training``), and the task contract imports nothing of ours.

Checked on the source, every import statement including the deferred ones inside
functions, so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
import functools
import graphlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("node", "workers", "models")
# The command line mounts `cxr-node train` and `cxr-node eval`: the one runtime-side importer.
TRAINING_IMPORTERS = {"node.cli"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def imported_names(path: Path) -> set[str]:
    """Every absolute module (and module.attribute) an import statement in the file names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _ours(name: str) -> str | None:
    while name not in MODULES:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> our modules it imports (a package's own parents excluded)."""
    graph = {}
    for module, path in MODULES.items():
        targets = {_ours(n) for n in imported_names(path)}
        graph[module] = {t for t in targets if t and t != module and not module.startswith(t + ".")}
    return graph


def test_no_import_cycles() -> None:
    try:
        tuple(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


RUNTIME = sorted(m for m in MODULES if not m.startswith("models.training") and m not in TRAINING_IMPORTERS)


@pytest.mark.parametrize("module", RUNTIME)
def test_runtime_does_not_import_training(module: str) -> None:
    training = sorted(m for m in import_graph()[module] if m.startswith("models.training"))
    assert not training, f"{module} imports training code: {training}"


def test_task_contract_imports_nothing_of_ours() -> None:
    assert import_graph()["workers.contract"] == set()


def test_the_checks_see_deferred_imports_and_cycles(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from models.training.fit import main\n")
    assert "models.training.fit" in imported_names(module)
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).static_order())


# `python -m node.cli` runs the CLI as __main__: it names its logger.
NAMED_LOGGERS = {"node.cli": "node.cli"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_one_logger_convention(module: str) -> None:
    """Every module logs through ``logger = logging.getLogger(__name__)``, handlers set in entry points."""
    tree = ast.parse(MODULES[module].read_text())
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        if not (isinstance(call.func, ast.Attribute) and call.func.attr == "getLogger"):
            continue
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        assert names == ["logger"], f"{module}: module logger named {names}, not 'logger'"
        arg = call.args[0] if call.args else None
        if module in NAMED_LOGGERS:
            assert isinstance(arg, ast.Constant) and arg.value == NAMED_LOGGERS[module]
        else:
            assert isinstance(arg, ast.Name) and arg.id == "__name__", f"{module}: getLogger without __name__"

"""Runtime apart from training: no runtime module imports ``models.training``.

Checked on the source (every import statement, including the deferred ones inside
functions), so a lazy import cannot hide a dependency. The one allowed importer is the
command line (``node/cli.py`` mounts ``cxr-node train`` and ``cxr-node eval``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI_ENTRY_POINTS = {"node/cli.py"}


def _runtime_files() -> list[Path]:
    files = [p for p in (REPO / "models").glob("*.py")]
    for package in ("node", "workers"):
        files += (REPO / package).rglob("*.py")
    return sorted(p for p in files if str(p.relative_to(REPO)) not in CLI_ENTRY_POINTS)


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", _runtime_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_runtime_module_does_not_import_training(path: Path) -> None:
    training = sorted(m for m in imported_modules(path) if m.startswith("models.training"))
    assert not training, f"{path.relative_to(REPO)} imports training code: {training}"


def test_the_check_sees_deferred_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from models.training.fit import main\n")
    assert "models.training.fit" in imported_modules(module)

"""The import layers of app/ (pyproject.toml, `[tool.importlinter]`) hold, cover every
module, leave no cycle, and `lint-imports` (run by `make lint`) fails when an import points
up a layer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

from tests.support import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def layer_modules() -> list[str]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    [contract] = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers"]
    return [
        module.strip()
        for layer in contract["layers"]
        for module in layer.replace("|", ":").split(":")
    ]


def app_modules() -> set[str]:
    modules = set()
    for path in (REPO_ROOT / "app").rglob("*.py"):
        if path.name != "__init__.py":
            modules.add(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))
    return modules


def test_every_module_of_app_sits_in_exactly_one_layer() -> None:
    named = layer_modules()
    assert len(named) == len(set(named)), "a module is named in two layers"
    covered = {
        module
        for module in app_modules()
        if any(module == layer or module.startswith(layer + ".") for layer in named)
    }
    assert app_modules() - covered == set(), "modules outside every layer escape the check"


def test_no_import_cycle_between_modules() -> None:
    graph = grimp.build_graph("app")
    modules = sorted(m for m in graph.modules if m.startswith("app."))
    cycles = []
    for module in modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.find_shortest_chain(importer=imported, imported=module) is not None:
                cycles.append(f"{module} -> {imported} -> ... -> {module}")
    assert cycles == []


def run_lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layers_hold() -> None:
    result = run_lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    ("module", "upward_import"),
    [
        ("app/jobs/repository.py", "import app.jobs.service"),  # repository -> service
        ("app/errors.py", "import app.web.deps"),  # foundation -> web edge
        ("app/jobs/service.py", "from app.web import deps"),  # service -> web edge
        ("app/callbacks/classify.py", "import app.runtime"),  # decisions -> composition
    ],
)
def test_an_import_up_a_layer_fails_the_lint(
    tmp_path: Path, module: str, upward_import: str
) -> None:
    shutil.copytree(REPO_ROOT / "app", tmp_path / "app")
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{upward_import}  # noqa\n")
    result = run_lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    imported = upward_import.split()[1]
    assert imported in result.stdout, result.stdout

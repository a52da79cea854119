"""The layers of the package, checked by import-linter (the contracts in ``pyproject.toml``).

``models/`` and ``guides/`` install as ``bnas_pyro.models`` and ``bnas_pyro.guides`` from folders
beside ``bnas_pyro/``, and import-linter reads a package from one folder, so the test lays the
three out as the installed package in a temporary folder and lints that copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("importlinter")


def _staged_package(tmp_path: Path) -> Path:
    """``tmp_path/bnas_pyro`` as installed: the engine with ``models`` and ``guides`` inside it."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    target = tmp_path / "bnas_pyro"
    shutil.copytree(ROOT / "bnas_pyro", target, ignore=ignore)
    for sub in ("models", "guides"):
        shutil.copytree(ROOT / sub, target / sub, ignore=ignore)
    return tmp_path


def _lint(tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    return subprocess.run(command + ["--no-cache", str(ROOT / "pyproject.toml")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_layers_and_acyclicity_contracts_hold(tmp_path):
    staged = _staged_package(tmp_path)
    out = _lint(staged)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout
    # the linted graph is the whole installed package: every module, models and guides included
    files = list((staged / "bnas_pyro").rglob("*.py"))
    assert any(f.parts[-2] == "models" for f in files) and any(f.parts[-2] == "guides" for f in files)
    analysed = int(re.search(r"Analyzed (\d+) files", out.stdout).group(1))
    assert analysed == len(files), out.stdout


@pytest.mark.parametrize("importer, imported", [
    ("bnas_pyro/search_space.py", "bnas_pyro.app.runner"),        # an upward import
    ("bnas_pyro/analysis/result.py", "bnas_pyro.search.bilevel"),  # a cycle analysis <-> search
    ("bnas_pyro/guides/delta.py", "bnas_pyro.analysis.result"),    # a guide reading the result
    ("bnas_pyro/models/weight_priors.py", "bnas_pyro.guides"),     # the prior reading q
    ("bnas_pyro/models/likelihoods.py", "bnas_pyro.models.supernet_model"),  # a cycle in models
])
def test_an_upward_import_breaks_the_contract(tmp_path, importer, imported):
    staged = _staged_package(tmp_path)
    path = staged / importer
    path.write_text(path.read_text() + f"\n\nimport {imported}  # noqa\n")
    out = _lint(staged)
    assert out.returncode != 0, out.stdout
    assert "BROKEN" in out.stdout, out.stdout

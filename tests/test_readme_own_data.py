"""The README's "Your own data" section runs as written: its command lines (the search with a
shorter budget) on a generated CSV, and its estimator code."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from bnas_pyro.app.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
SHORT = ["--set", "space.options={hidden: 8}", "--set", "search.epochs=20",
         "--set", "retrain.epochs=20", "--set", "analysis.draws=10",
         "--set", "analysis.predictive_draws=10", "--set", "analysis.plots=false", "-q"]


def _section() -> str:
    text = README.read_text()
    start = text.index("## Your own data")
    return text[start:text.index("\n## ", start + 1)]


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", _section(), flags=re.S)


def test_the_section_is_short():
    for kind in ("bash", "python"):
        (block,) = _blocks(kind)
        assert len(block.strip().splitlines()) < 10


def test_the_command_lines_run(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3))
    species = np.where(x[:, 0] > 0.3, "spruce", np.where(x[:, 1] > 0, "oak", "birch"))
    lines = ["girth,height,age,species"] + [f"{a:.5f},{b:.5f},{c:.5f},{s}"
                                            for (a, b, c), s in zip(x, species)]
    (tmp_path / "trees.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    (block,) = _blocks("bash")
    for line in block.strip().splitlines():
        words = shlex.split(line)
        if words[0] == "bnas-pyro":
            assert main(words[1:] + SHORT) == 0
        else:
            out = subprocess.run([sys.executable] + words[1:], capture_output=True, text=True,
                                 timeout=120, cwd=tmp_path)
            assert out.returncode == 0, out.stderr
            printed = eval(out.stdout.strip())  # the list of predicted names
            assert len(printed) == 5 and set(printed) <= {"birch", "oak", "spruce"}


def test_the_estimator_code_runs():
    (block,) = _blocks("python")
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["clf"].score(scope["X_test"], scope["y_test"]) > 0.9
    assert scope["proba"].shape == (len(scope["X_test"]), 3)

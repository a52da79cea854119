"""`make demo`: the default structure search, exactly what ``bnas-pyro search`` runs with no argument.

Searches the multi-node MLP cell space on scikit-learn's digits (shipped with scikit-learn; nothing
downloads) in evidence mode: q(W, Gamma), the weight precisions A and the structure logits m are
fitted jointly by maximising the ELBO (METHOD.md section 4).  Then it derives the most probable
structure as a plain network, retrains it, scores it on the held-out test split, and writes a run
directory (config, result.json, checkpoint, network, posterior.nc for ArviZ, PNG plots).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from .config import default_config
from .run_directory import RUN_FILES, format_summary
from .runner import run_search

#: what the demo promises for the derived, retrained network on the digits test split
ACCURACY_TARGET = 0.96


def main(argv: Sequence[str] | None = None) -> int:
    config = default_config()
    print("bnas-pyro demo: Bayesian structure search on digits (MLP cell space, evidence mode)")
    outcome = run_search(config, progress=True)
    summary = {**outcome.summary, "run_dir": str(outcome.run_dir)}
    print()
    print(format_summary(summary))
    files = [f for f in RUN_FILES if (Path(outcome.run_dir) / f).exists()]
    missing = [f for f in RUN_FILES if f not in files]
    print(f"run directory {outcome.run_dir}: {', '.join(files)}")
    print(f"redraw and reprint with: bnas-pyro report {outcome.run_dir}")
    acc = outcome.summary["analysis"]["metrics"].get("test_accuracy")
    print()
    print("found architecture:", ", ".join(f"{e}: {p}" for e, p in outcome.summary["structure"].items()))
    verdict = "OK" if acc is not None and acc >= ACCURACY_TARGET else "BELOW TARGET"
    print(f"derived and retrained network, test accuracy {acc:.4f} (target >= {ACCURACY_TARGET}): {verdict}")
    if missing:
        print(f"missing from the run directory: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``bnas-pyro`` command line.

    bnas-pyro search                      the embedded default search (digits, MLP cell, evidence)
    bnas-pyro search --config run.yaml    a search described by a YAML or JSON file
    bnas-pyro search --set search.epochs=20 --set data.name=wine   override single keys
    bnas-pyro search --print-config       print the configuration that would run, and stop
    bnas-pyro search --data FILE --target COLUMN   search on one's own CSV / TSV / .npz / .npy
    bnas-pyro search --resume RUN_DIR     continue a killed run from its checkpoint
    bnas-pyro resume RUN_DIR              the same
    bnas-pyro search --out DIR --force    start over in a folder that holds a run
    bnas-pyro report RUN_DIR              print a run's summary and redraw its plots
    bnas-pyro list [WHAT]                 data sets, spaces, primitives, modes, guides,
                                          hypergradients

Configuration errors (unknown key, wrong type, unknown data set, space, primitive, mode, guide or
hypergradient) stop the command at once with the key named, exit status 2; so do bad run
directories and unreadable files (named).  A search that fails (a non-finite objective, a file it
cannot write) stops with a one-line error, exit status 1; its last checkpoint is kept, so
``bnas-pyro resume RUN_DIR`` can continue it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

LIST_WHAT = ("datasets", "spaces", "primitives", "modes", "guides", "hypergradients")


def _parser() -> argparse.ArgumentParser:
    from bnas_pyro import __version__

    p = argparse.ArgumentParser(prog="bnas-pyro", description="Bayesian neural-architecture "
                                "search in Pyro: find the most plausible structure of a network.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="run a structure search and write a run directory")
    s.add_argument("--config", "-c", metavar="FILE", help="YAML or JSON configuration "
                   "(default: the embedded default search)")
    s.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override one key by its dotted path, e.g. search.epochs=20 (repeatable)")
    s.add_argument("--data", metavar="FILE", help="one's own data: a CSV / TSV / .npz / .npy "
                   "file (sets data.path)")
    s.add_argument("--target", metavar="COLUMN", help="the target column of --data "
                   "(sets data.target)")
    s.add_argument("--out", metavar="DIR", help="the run directory (default: OUTPUT/NAME-TIME); "
                   "refused if it already holds a run, unless --force or --resume")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its "
                   "checkpoint, with its own config.yaml (no --config / --set / --out)")
    s.add_argument("--force", action="store_true",
                   help="start over in an --out folder that already holds a run")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    s.add_argument("--print-config", action="store_true",
                   help="print the configuration as YAML and exit")
    res = sub.add_parser("resume", help="continue a killed run from its checkpoint")
    res.add_argument("run_dir", metavar="RUN_DIR")
    res.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    r = sub.add_parser("report", help="print a run directory's summary and redraw its plots")
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--no-plots", action="store_true", help="do not redraw the plots")
    lst = sub.add_parser("list", help="list what a configuration can name")
    lst.add_argument("what", nargs="?", choices=LIST_WHAT, help="one category (default: all)")
    return p


def _apply_overrides(config, pairs: Sequence[str]):
    import yaml

    from .config import ConfigError

    changes = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(pair, "--set needs KEY=VALUE")
        key, raw = pair.split("=", 1)
        changes[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return config.replace(**changes) if changes else config


def _search(args) -> int:
    import yaml

    from .config import ConfigError, load_config
    from .run_directory import format_summary
    from .runner import run_search

    if args.resume is not None:
        given = [flag for flag, used in (("--config", args.config), ("--set", args.set),
                                         ("--out", args.out), ("--force", args.force),
                                         ("--print-config", args.print_config)) if used]
        if given:
            raise ConfigError("", f"--resume continues a run with its own config.yaml; "
                                  f"leave out {', '.join(given)}")
        return _resume(args.resume, args.quiet)
    config = _apply_overrides(load_config(args.config), args.set)
    data = {f"data.{k}": v for k, v in (("path", args.data), ("target", args.target)) if v}
    config = config.replace(**data) if data else config
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    outcome = run_search(config, run_dir=args.out, progress=not args.quiet, force=args.force)
    if outcome is None:   # a rank other than 0 of a torchrun job: rank 0 reports
        return 0
    print(format_summary({**outcome.summary, "run_dir": str(outcome.run_dir)}))
    return 0


def _resume(run_dir: str, quiet: bool) -> int:
    from .run_directory import format_summary
    from .runner import run_search

    outcome = run_search(None, run_dir=run_dir, progress=not quiet, resume=True)
    if outcome is None:   # a rank other than 0 of a torchrun job: rank 0 reports
        return 0
    print(format_summary({**outcome.summary, "run_dir": str(outcome.run_dir)}))
    return 0


def _report(args) -> int:
    from .run_directory import report

    print(report(args.run_dir, redraw=not args.no_plots))
    return 0


def listing(what: str | None = None) -> str:
    """The text of ``bnas-pyro list [WHAT]``."""
    from bnas_pyro.data import available_datasets, dataset_info
    from bnas_pyro.guides import available_guides
    from bnas_pyro.primitives import available_primitives
    from bnas_pyro.spaces import available_spaces

    from .config_validation import available_hypergradients, available_modes

    sections = {
        "datasets": [f"{n:<15} {dataset_info(n).description}" for n in available_datasets()],
        "spaces": [f"{n:<15} {d}" for n, d in available_spaces().items()],
        "primitives": available_primitives(),
        "modes": available_modes(),
        "guides": available_guides(),
        "hypergradients": available_hypergradients(),
    }
    chosen = [what] if what else list(LIST_WHAT)
    out = []
    for name in chosen:
        out.append(f"{name}:")
        out += [f"  {line}" for line in sections[name]]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bnas-pyro`` console script; returns the exit status."""
    from bnas_pyro.atomic_files import FileWriteError
    from bnas_pyro.search.checkpoint import CheckpointError

    from .config import ConfigError
    from .run_directory import RunDirectoryError

    args = _parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(format="%(message)s", stream=sys.stderr)
    logging.getLogger("bnas_pyro").setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        if args.command == "search":
            return _search(args)
        if args.command == "resume":
            return _resume(args.run_dir, args.quiet)
        if args.command == "report":
            return _report(args)
        print(listing(args.what))
        return 0
    except (ConfigError, FileNotFoundError, RunDirectoryError, CheckpointError) as err:
        _error(err)
        return 2
    except (FileWriteError, FloatingPointError) as err:
        _error(err)
        return 1


def _error(err: BaseException) -> None:
    """One line on stderr."""
    text = " ".join(str(err).split())
    print(f"bnas-pyro: error: {text}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

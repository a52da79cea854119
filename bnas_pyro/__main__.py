"""``python -m bnas_pyro``: the command line (see ``bnas-pyro --help``)."""

from bnas_pyro.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

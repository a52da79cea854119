"""The application: a run configuration in, a run directory out.

- :mod:`~bnas_pyro.app.config`: the validated YAML/JSON configuration;
- :mod:`~bnas_pyro.app.builders`: data, space, model, guide and mode from a configuration;
- :mod:`~bnas_pyro.app.drivers`: one search, restarts or enumeration;
- :mod:`~bnas_pyro.app.runner`: build -> drive -> analyse -> retrain -> write;
- :mod:`~bnas_pyro.app.run_directory`, :mod:`~bnas_pyro.app.plots`: what a run leaves on disk;
- :mod:`~bnas_pyro.app.cli`: ``bnas-pyro search | report | list``; :mod:`~bnas_pyro.app.demo`:
  what ``make demo`` runs.
"""

"""The search: the bilevel loop (METHOD.md sections 4-5) and what drives it.

- :mod:`~bnas_pyro.search.bilevel`: :class:`BilevelSearch`, inner SVI steps on theta and
  hyper-steps on h, its history and checkpoints;
- :mod:`~bnas_pyro.search.enumeration`: the runs f_1..f_N of the ``enumerate`` mode;
- :mod:`~bnas_pyro.search.restarts`: several searches, the best by final ELBO;
- :mod:`~bnas_pyro.search.checkpoint`: atomic save and load of a search state;
- :mod:`~bnas_pyro.search.darts`: the DARTS-style baseline search.
"""

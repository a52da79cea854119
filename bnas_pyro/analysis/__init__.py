"""What a search found, and what it is worth (METHOD.md sections 2-4, 6).

- :mod:`~bnas_pyro.analysis.structure_posterior`: q(structure), the top-k structures, E_q[gamma];
- :mod:`~bnas_pyro.analysis.result`: :class:`SearchResult`, the container a search returns;
- :mod:`~bnas_pyro.analysis.complexity`: C_param, C_struct, relative densities, pruning;
- :mod:`~bnas_pyro.analysis.collapse`: skip/zero choices and input-to-output connectivity;
- :mod:`~bnas_pyro.analysis.criteria`: scores under ML, MAP, evidence, hold-out, AIC, BIC;
- :mod:`~bnas_pyro.analysis.metrics`: accuracy / RMSE, NLL, ECE of a network or of q;
- :mod:`~bnas_pyro.analysis.ranking`: the top-k structures by refitted evidence +- its error;
- :mod:`~bnas_pyro.analysis.comparison`: ``compare``, results ranked by evidence, PSIS-LOO beside;
- :mod:`~bnas_pyro.analysis.arviz_data`: every ArviZ call (InferenceData, PSIS-LOO, az.compare);
- :mod:`~bnas_pyro.analysis.export`: the derived network as a plain module and its JSON.
"""

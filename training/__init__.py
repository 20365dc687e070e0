"""mlqueue's plain ML library: data preparation, algorithms, the PyTorch loop, metrics, registry, predictors.

Nothing is imported here on purpose: `training.errors`, `training.params` and `training.registry` are stdlib-only
and the API process reads them; everything that needs numpy, pandas, scikit-learn or torch lives in other modules
that only workers and the local CLI load.
"""

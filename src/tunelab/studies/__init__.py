"""Many runs about one question: hyperparameter search, cross-validation, learning curves, comparisons,
baselines, zero-shot scores and ensembles."""

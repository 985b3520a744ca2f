"""Metric functions, one module per family (scikit-learn underneath, nothing hand-rolled)."""

"""Scoring a trained model: metrics of a split, per-example records, generation scoring, predictions."""

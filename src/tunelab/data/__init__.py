"""The data stage: reading files into line-numbered records, checks, hygiene, augmentation, splits, leakage."""

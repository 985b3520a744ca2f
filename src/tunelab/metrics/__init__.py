"""Metric functions, one module per family (scikit-learn / seqeval underneath; QA follows the official
SQuAD and CMRC 2018 evaluation scripts, which have no library form here)."""

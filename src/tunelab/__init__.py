"""tunelab: fine-tune pretrained language models, from data to production."""

__version__ = "0.1.0"

"""`python -m tunelab`: the command line."""

from tunelab.cli import app

app()

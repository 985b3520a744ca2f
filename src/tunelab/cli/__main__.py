"""`python -m tunelab.cli`: the command line."""

from tunelab.cli import app

app()

"""Reading data files into line-numbered records, and splitting them."""

from tunelab.data.readers import Record, Table, read_table
from tunelab.data.splits import split_validation

__all__ = ["Record", "Table", "read_table", "split_validation"]

"""Arrow list columns as numpy arrays, without Python lists: the flattened values with the row each
belongs to, or a (rows x width) matrix when every row holds the same number of values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def flat(table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, parent row) of a list column."""
    col = table.column(column).combine_chunks()
    return (pc.list_flatten(col).to_numpy(zero_copy_only=False),
            pc.list_parent_indices(col).to_numpy(zero_copy_only=False))


def list_matrix(table: pa.Table, column: str, dtype: type = np.float64) -> np.ndarray:
    """A list column whose rows all have the same length, as a (rows x length) array."""
    values = pc.list_flatten(table.column(column).combine_chunks()).to_numpy(zero_copy_only=False)
    if table.num_rows and values.size % table.num_rows:
        raise ValueError(f"list column '{column}' has rows of different lengths")
    return np.asarray(values, dtype=dtype).reshape(table.num_rows, -1)

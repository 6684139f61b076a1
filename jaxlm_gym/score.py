"""Normalised scores, as LMRL-Gym computes them (``compute_score_normalizations.py``).

Two linear pieces map the task's minimum return to 0, the dataset average to 50 and the
maximum to 100.
"""

from __future__ import annotations

import numpy as np

#: task -> (min, dataset average, max), from the reference. Maze FO's max is the mean
#: BFS-optimal return over the 25 starts (``Maze.optimal_returns``).
NORMALIZATION = {
    "maze-fo": (-101.0, -83.0, -6.84),
    "maze-po": (-101.0, -83.0, -25.75),
    "chess": (-401.0, 0.21, 1.0),
    "endgames": (-1.0, 0.586, 1.0),
}


def normalize(task: str, returns):
    """Normalised score(s) of raw return(s) for ``task`` (a key of ``NORMALIZATION``)."""
    if task not in NORMALIZATION:
        raise ValueError(f"no normalisation constants for {task!r}; known tasks: {sorted(NORMALIZATION)}")
    lo, avg, hi = NORMALIZATION[task]
    x = np.asarray(returns, np.float64)
    out = np.where(x < avg, 50.0 * (x - lo) / (avg - lo), 50.0 + 50.0 * (x - avg) / (hi - avg))
    return float(out) if out.ndim == 0 else out

"""Normalised scores, as LMRL-Gym computes them (``compute_score_normalizations.py``).

Two linear pieces map the task's minimum return to 0, the dataset average to 50 and the
maximum to 100.

The reference has constants only for maze, chess and endgames (``NORMALIZATION``). For
Wordle it has none; spec §12 gives its natural bounds (``NATURAL_BOUNDS``: -6, six failed
tries, and 0, solved at once) and leaves the dataset average to the data: callers pass
the mean return of the dataset the learners trained on as ``average`` (so that data
scores 50). Note that 0 is out of reach (the greedy information-gain expert averages
about -1.9 on the 431-word benchmark list), so no Wordle policy scores 100.

Text-Nav (FO and PO) is handled the same way: natural bounds 0 (the quest not done) and
1 (won; the return is the win flag, spec §3 and §12) with the training data's mean return
(its success rate) as the average. There 100 is reachable: the shortest-completion expert
wins every episode within the 15-step cap.
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


#: task -> (min, max) for tasks without reference constants (spec §12); the average is the data's.
NATURAL_BOUNDS = {
    "wordle": (-6.0, 0.0),
    "text-nav-fo": (0.0, 1.0),
    "text-nav-po": (0.0, 1.0),
}


def constants(task: str, average: float | None = None) -> tuple[float, float, float]:
    """``(min, dataset average, max)`` of ``task``. ``average`` (a dataset's mean return) is required for
    the ``NATURAL_BOUNDS`` tasks and replaces the reference's average for the others."""
    if task in NORMALIZATION:
        lo, avg, hi = NORMALIZATION[task]
        return lo, (avg if average is None else float(average)), hi
    if task in NATURAL_BOUNDS:
        if average is None:
            raise ValueError(f"{task!r} has no reference dataset average: pass average= (the mean return of "
                             f"the dataset trained on)")
        lo, hi = NATURAL_BOUNDS[task]
        if not lo < float(average) < hi:
            raise ValueError(f"average {average} must lie strictly inside {task!r}'s bounds ({lo}, {hi})")
        return lo, float(average), hi
    raise ValueError(f"no normalisation constants for {task!r}; known tasks: "
                     f"{sorted(set(NORMALIZATION) | set(NATURAL_BOUNDS))}")


def normalize(task: str, returns, average: float | None = None):
    """Normalised score(s) of raw return(s) for ``task`` (a key of ``NORMALIZATION`` or ``NATURAL_BOUNDS``;
    ``average``: see ``constants``)."""
    lo, avg, hi = constants(task, average)
    x = np.asarray(returns, np.float64)
    out = np.where(x < avg, 50.0 * (x - lo) / (avg - lo), 50.0 + 50.0 * (x - avg) / (hi - avg))
    return float(out) if out.ndim == 0 else out

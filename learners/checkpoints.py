"""Orbax checkpoints for the learners: save, resume, and keep the best checkpoints by eval score.

What is saved
    * ``state``: the pytree leaves of any pytree (a dict of arrays, a ``flax.training.train_state.TrainState``, a
      ``flax.struct.PyTreeNode`` such as ``learners.ilql.ILQLState``). Static fields (``apply_fn``, ``tx``, ...) are
      part of the tree structure, not leaves: they are NOT written; ``restore`` takes them from the target you pass.
      Leaves may be ``jax.Array`` (sharded or not), ``np.ndarray`` or Python scalars.
    * ``metrics``: a JSON dict per step (eval score, losses, ...); ``metrics[best]`` ranks the checkpoints.
    * ``config``: the run config as JSON, written once per directory (by the first ``save`` that passes one), so a
      run can be inspected and resumed with the same settings.

Directory layout (``directory`` is made absolute and created if missing)::

    <directory>/
        config.json               run config (ours; written atomically, never overwritten)
        <step>/                   one orbax step directory per kept step, named by the plain integer step
            _CHECKPOINT_METADATA  orbax step metadata (commit time, item handlers)
            state/                the state's leaves (orbax ``StandardSave``: OCDBT/TensorStore + _METADATA)
            metrics/metrics       the step's metrics as JSON ({} when none were given)

Steps are written synchronously by default, so when ``save`` returns the step is on disk (orbax writes into a
temporary directory and renames it on commit: a run killed mid-save leaves no half step behind).
``async_save=True`` lets ``save`` return once the arrays are copied to host; ``wait()`` (called by every read
method) blocks until the write is committed.

Resume
    ``ckpt = Checkpointer(directory)`` on the same directory, then ``step = ckpt.latest_step()``; if it is not
    None, ``state = ckpt.restore(initial_state)`` (the freshly built state is the target: it supplies the tree
    structure, static fields, dtypes, shapes and shardings) and the driver continues from ``step + 1``.
    ``ckpt.config()`` returns the config the run was started with.

Best
    A step's score is ``float(metrics[best])``; steps saved without that metric, or with a NaN or non-numeric value,
    never count as best. ``best_step()`` is the step with the highest (``best_mode="max"``) or lowest (``"min"``)
    score among the kept steps; ties go to the later step (the one orbax's ranking keeps).

Retention (``max_to_keep``)
    * ``max_to_keep=None``: every step is kept.
    * ``best=None``: the ``max_to_keep`` most recent steps (orbax ``LatestN``).
    * ``best`` set: the ``max_to_keep`` best steps by score (orbax ``BestN``, the ``best_fn`` semantics: sort by
      score, keep the top ``max_to_keep``; unscored steps rank below every scored one, so with fewer than
      ``max_to_keep`` scored steps the most recent unscored ones fill the remaining places), PLUS the latest step,
      whatever its score, so a run can always resume from where it stopped. Up to ``max_to_keep + 1`` steps can
      therefore be on disk. Orbax alone (``CheckpointManagerOptions(max_to_keep=..., best_fn=...)``) keeps only the
      best ones and deletes a just-saved step at once when it scores below them; resume would then silently go back
      to an older step. We pass orbax an explicit ``AnyPreservationPolicy([BestN(...), LatestN(1)])`` instead.

Saving a step that is not after the latest saved step returns False and writes nothing (orbax's rule: a resumed
driver replaying a step does not clobber it). ``force=True`` rewinds instead: the saved steps ``>= step`` are
deleted, then ``step`` is saved.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import os
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_policies

BEST_MODES = ("max", "min")
CONFIG_FILE = "config.json"
_STATE_ITEM = "state"


def _jsonable(obj: Any, what: str) -> Any:
    """``obj`` as plain JSON values (dicts with str keys, lists, numbers, str, bool, None), or a ValueError."""
    if isinstance(obj, (np.generic, np.ndarray, jax.Array)):  # device/numpy scalars from jitted metrics
        a = np.asarray(obj)
        return a.item() if a.ndim == 0 else a.tolist()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{what}: keys must be strings, got {k!r} ({type(k).__name__})")
            out[k] = _jsonable(v, f"{what}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{what}[{i}]") for i, v in enumerate(obj)]
    raise ValueError(f"{what}: {type(obj).__name__} values are not JSON-able (use numbers, strings, bools, None, "
                     f"lists and dicts with string keys)")


def _index(step: Any) -> int:
    try:
        step = operator.index(step)
    except TypeError:
        raise ValueError(f"step must be an integer, got {step!r} ({type(step).__name__})") from None
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step


class Checkpointer:
    """Save / resume / best-by-score checkpoints of a training state, on top of ``orbax.checkpoint.CheckpointManager``.

    Args:
        directory: where checkpoints live (made absolute; created if missing). Reopening the same directory
            resumes: existing steps, their metrics and the config are found again.
        max_to_keep: how many checkpoints to keep (see the module docstring, "Retention"); None keeps all.
        best: the metric that ranks checkpoints (``metrics[best]``); None for no ranking (recency retention only).
        best_mode: ``"max"`` (higher is better, e.g. an eval score) or ``"min"`` (e.g. an eval loss).
        async_save: if True, ``save`` returns before the write is committed; ``wait()`` blocks until it is.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3, best: str | None = "score",
                 best_mode: str = "max", async_save: bool = False):
        if best_mode not in BEST_MODES:
            raise ValueError(f"best_mode must be one of {BEST_MODES}, got {best_mode!r}")
        if best is not None and not isinstance(best, str):
            raise ValueError(f"best must be a metric name (str) or None, got {best!r}")
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int)
                                        or max_to_keep < 1):
            raise ValueError(f"max_to_keep must be None (keep all) or an int >= 1, got {max_to_keep!r}")
        self.directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
        self.max_to_keep, self.best, self.best_mode = max_to_keep, best, best_mode
        os.makedirs(self.directory, exist_ok=True)

        # Orbax writes the per-step metrics only when a best_fn is set; we rank with our own ``_rank`` and give orbax
        # an explicit preservation policy, so its best_fn only switches the metrics writing on.
        if max_to_keep is None:
            policy = ocp_policies.LatestN(n=None)  # n=None keeps every step
        elif best is None:
            policy = ocp_policies.LatestN(n=max_to_keep)
        else:
            policy = ocp_policies.AnyPreservationPolicy([
                ocp_policies.BestN(get_metric_fn=self._rank, reverse=best_mode == "min", n=max_to_keep,
                                   keep_checkpoints_without_metrics=False),
                ocp_policies.LatestN(n=1),  # the latest step always stays restorable, for resume
            ])
        options = ocp.CheckpointManagerOptions(
            best_fn=self._rank if best is not None else (lambda metrics: 0.0), best_mode=best_mode,
            preservation_policy=policy, enable_async_checkpointing=async_save, create=True)
        # Registering the state's handler up front lets a fresh manager (a resumed run) read the saved tree's
        # metadata before its first save or restore.
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        handler = ocp.handlers.StandardCheckpointHandler()
        registry.add(_STATE_ITEM, ocp.args.StandardSave, handler)
        registry.add(_STATE_ITEM, ocp.args.StandardRestore, handler)
        self._manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=registry)
        self._metrics: dict[int, dict] = {}  # cache of metrics read back from disk

    # ---- scores ---------------------------------------------------------------------------------------------------

    def _score(self, metrics: Any) -> float | None:
        """``float(metrics[best])``, or None when the step has no usable score."""
        if self.best is None or not isinstance(metrics, Mapping) or self.best not in metrics:
            return None
        try:
            value = float(metrics[self.best])
        except (TypeError, ValueError):
            return None
        return None if math.isnan(value) else value

    def _rank(self, metrics: Any) -> float:
        """Orbax's ranking key: the score, with unscored steps below every scored one in either mode."""
        score = self._score(metrics)
        if score is None:
            return -math.inf if self.best_mode == "max" else math.inf
        return score

    # ---- steps ----------------------------------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        """The kept steps, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The highest kept step (always kept, see "Retention"), or None when nothing is saved."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The kept step with the best ``metrics[best]`` (ties: the later step), or None when no step has a score."""
        if self.best is None:
            raise ValueError("this Checkpointer ranks nothing (best=None); make it with best='<metric name>'")
        best_step, best_score = None, None
        for step in self.all_steps():
            score = self._score(self.metrics(step))
            if score is None:
                continue
            if best_score is None or (score >= best_score if self.best_mode == "max" else score <= best_score):
                best_step, best_score = step, score
        return best_step

    def _check_step(self, step: Any) -> int:
        step = _index(step)
        steps = self.all_steps()
        if step not in steps:
            raise ValueError(f"no checkpoint for step {step} in {self.directory}; saved steps: {steps}")
        return step

    # ---- save -----------------------------------------------------------------------------------------------------

    def save(self, step: int, state: Any, *, metrics: Mapping | None = None, config: Any = None,
             force: bool = False) -> bool:
        """Save ``state``'s leaves and ``metrics`` at ``step``; write ``config`` if the directory has none yet.

        Returns True when the step was saved. A step not after the latest saved step is not saved (returns False)
        unless ``force=True``, which first deletes the saved steps ``>= step``. ``metrics`` and ``config`` (a dict or
        a dataclass) must be JSON-able; numpy/JAX scalars are converted. Blocks until the step is committed unless
        the Checkpointer was made with ``async_save=True``.
        """
        step = _index(step)
        metrics = _jsonable({} if metrics is None else metrics, "metrics")
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics must be a dict, got {type(metrics).__name__}")
        if config is not None:
            self._write_config(_jsonable(config, "config"))
        self.wait()
        later = [s for s in self.all_steps() if s >= step]
        if later:
            if not force:
                return False
            for s in later:  # rewind: orbax keeps steps in save order, so "latest" must stay the highest step
                self._manager.delete(s)
                self._metrics.pop(s, None)
        saved = self._manager.save(step, args=ocp.args.Composite(**{_STATE_ITEM: ocp.args.StandardSave(state)}),
                                   metrics=metrics, force=True)
        if saved:
            self._metrics[step] = metrics
        kept = set(self._manager.all_steps())
        self._metrics = {s: m for s, m in self._metrics.items() if s in kept}
        return bool(saved)

    def wait(self) -> None:
        """Block until any in-flight save is committed (a no-op for synchronous saves)."""
        self._manager.wait_until_finished()

    def _write_config(self, config: Any) -> None:
        path = os.path.join(self.directory, CONFIG_FILE)
        if os.path.exists(path):
            old = self.config()
            if old != json.loads(json.dumps(config)):
                warnings.warn(f"{path} already holds a different config; keeping the first one", stacklevel=3)
            return
        if jax.process_index() != 0:
            return
        fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=self.directory)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        os.replace(tmp, path)  # atomic: a reader never sees half a config

    # ---- read -----------------------------------------------------------------------------------------------------

    def restore(self, target: Any, step: int | None = None) -> Any:
        """The state saved at ``step`` (default: the latest), as a pytree of the same structure and type as ``target``.

        ``target`` supplies the tree structure and the static fields (``apply_fn``, ``tx``, ...: kept from the
        target), and each leaf's type, dtype, shape and (for ``jax.Array``) sharding: pass the freshly initialised
        state, or ``jax.ShapeDtypeStruct`` leaves (with ``sharding=`` to get ``jax.Array``s, else numpy arrays).
        """
        self.wait()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise ValueError(f"no checkpoint in {self.directory}: nothing to restore (check latest_step() "
                                 f"first when resuming)")
        step = self._check_step(step)
        self._check_target(step, target)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{_STATE_ITEM: ocp.args.StandardRestore(target)}))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot restore step {step} of {self.directory} into the given "
                             f"{type(target).__name__} (its tree structure or a leaf's shape differs from the "
                             f"saved state): {e}") from e
        return restored[_STATE_ITEM]

    def _check_target(self, step: int, target: Any) -> None:
        """A ValueError naming the leaves whose path or shape differs between ``target`` and the saved state.

        (Orbax would fail too, but deep in TensorStore and with unretrieved errors of the sibling reads.)
        """
        try:
            saved = self._manager.metadata(step).item_metadata[_STATE_ITEM]
        except (KeyError, FileNotFoundError, ValueError):  # no metadata to check against: orbax reports
            return
        flat = jax.tree_util.tree_flatten_with_path
        saved = {"/".join(ocp.tree.str_keypath(kp)): leaf for kp, leaf in flat(getattr(saved, "tree", saved))[0]}
        wanted = {"/".join(ocp.tree.str_keypath(kp)): leaf for kp, leaf in flat(target)[0]}
        problems = []
        if missing := [p for p in saved if p not in wanted]:
            problems.append(f"saved but not in the target: {missing}")
        if extra := [p for p in wanted if p not in saved]:
            problems.append(f"in the target but not saved: {extra}")
        for path, leaf in wanted.items():
            if path not in saved or jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
                continue  # typed PRNG keys are saved as their key data: a different shape by design
            want_shape = tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)
            saved_shape = getattr(saved[path], "shape", None)
            if saved_shape is not None and tuple(saved_shape) != want_shape:
                problems.append(f"{path}: saved shape {tuple(saved_shape)}, target shape {want_shape}")
        if problems:
            raise ValueError(f"cannot restore step {step} of {self.directory} into the given "
                             f"{type(target).__name__}: " + "; ".join(problems))

    def restore_best(self, target: Any) -> Any:
        """``restore(target, best_step())``."""
        step = self.best_step()
        if step is None:
            raise ValueError(f"no saved step has a usable metric {self.best!r} in {self.directory}; "
                             f"saved steps: {self.all_steps()}")
        return self.restore(target, step)

    def metrics(self, step: int) -> dict:
        """The metrics saved with ``step`` ({} if none were given)."""
        self.wait()
        step = self._check_step(step)
        if step not in self._metrics:
            self._metrics[step] = dict(self._manager.metrics(step) or {})
        return dict(self._metrics[step])

    def config(self) -> dict | None:
        """The run config saved in this directory, or None if no save passed one."""
        path = os.path.join(self.directory, CONFIG_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    # ---- lifetime -------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish in-flight saves and release orbax's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Checkpointer({self.directory!r}, max_to_keep={self.max_to_keep}, best={self.best!r}, "
                f"best_mode={self.best_mode!r}, steps={self.all_steps()})")

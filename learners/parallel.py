"""Data-parallel training and rollouts over a 1-D device mesh (``jax.sharding``, SPMD ``jit``).

**Layout.** One mesh axis (``"data"`` by default) and one rule: *rows go across devices, parameters are
everywhere*.

- env batch: ``jaxlm_gym.make_vec(id, N, ..., sharding=env_sharding(mesh))`` keeps every env array split on
  its env axis (axis 0 of obs/state, axis 1 of a time-major ``Trajectory [T, N, ...]``). ``N`` must be a
  multiple of the device count.
- model batch: the rows of a training minibatch ``[B, ...]`` are split the same way (``B`` a multiple of the
  device count); datasets (``bc_batch`` dicts ``[M, ...]``) are split on rows with ``shard_rows``.
- parameters and optimiser state: fully replicated (``replicate``).

Everything else is XLA's SPMD partitioner: inside one ``jit`` the forward/backward pass runs on each
device's rows, and the reductions over the batch (the masked token mean of the loss, the gradient sums)
become all-reduces, so every device applies the same averaged update and the replicated parameters stay
identical. The results equal single-device training up to float summation order. The mesh's axis is
``AxisType.Auto`` (sharding in types is not needed: shardings are set on inputs/outputs and with
``jax.lax.with_sharding_constraint``, which is also how ``VecEnv`` pins its env batch). No ``pmap``.

Randomness does not depend on the layout: JAX's partitionable threefry (the default) draws the same bits
for an array whatever its sharding, so a sharded rollout / dataset equals the unsharded one for the same key.

**Use with the drivers** (``learners.train_bc`` and friends)::

    mesh = data_mesh()                                   # all devices, axis "data"
    data_env = jaxlm_gym.make_vec(task, n_envs, obs_mode="tokens", action_mode="tokens",
                                  sharding=env_sharding(mesh))
    traj = generate_dataset(data_env, expert, key, steps, eps)   # sharded on the env axis
    data = shard_rows(bc_batch(traj, vocab), mesh)                # dataset rows across devices
    state = replicate(TrainState.create(...), mesh)
    chunk_fn = make_data_parallel_chunk(update, batch_size, chunk, mesh)   # instead of make_train_chunk
    state, metrics = chunk_fn(state, data, key)                   # same signature and keys as make_train_chunk
    traj = sharded_rollout(eval_env, policy, state.params, key, steps, mesh)  # eval env made with env_sharding

``make_data_parallel_chunk`` draws exactly the minibatch indices of ``train_bc.make_train_chunk`` for the same
key (indices are global over the dataset), so the two give the same losses and parameters up to float
rounding. On one device it is ``make_train_chunk``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from learners.rollout import rollout

BC_KEYS = ("input_ids", "attention_mask", "action_mask")


# ----------------------------------------------------------------------------------------------------
# Mesh and placements


def data_mesh(devices: Sequence[jax.Device] | None = None, axis: str = "data") -> Mesh:
    """A 1-D mesh named ``axis`` over ``devices`` (default: every device of the default backend)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device")
    return Mesh(np.asarray(devices, dtype=object), (axis,), axis_types=(AxisType.Auto,))


def axis_size(mesh: Mesh, axis: str = "data") -> int:
    """Number of devices along ``axis`` of ``mesh`` (ValueError naming the mesh's axes if absent)."""
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh has no axis {axis!r}; its axes are {tuple(mesh.axis_names)}")
    return int(mesh.shape[axis])


def row_sharding(mesh: Mesh, axis: str = "data", dim: int = 0) -> NamedSharding:
    """Split array dimension ``dim`` over ``axis``; every other dimension whole."""
    axis_size(mesh, axis)
    return NamedSharding(mesh, PartitionSpec(*([None] * dim), axis))


def env_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """The ``sharding=`` for ``jaxlm_gym.make_vec``: the env batch (axis 0) split over ``axis``."""
    return row_sharding(mesh, axis, 0)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def shard_rows(tree: Any, mesh: Mesh, axis: str = "data", dim: int = 0) -> Any:
    """Place every array of ``tree`` with dimension ``dim`` (default: the leading one, the rows) split over the
    devices of ``axis``. ``dim=1`` places a time-major ``Trajectory`` by envs. ValueError when a leaf has no
    such dimension or its size is not a multiple of the device count."""
    n = axis_size(mesh, axis)
    sharding = row_sharding(mesh, axis, dim)

    def put(x):
        shape = np.shape(x)
        if len(shape) <= dim:
            raise ValueError(f"shard_rows: a leaf of shape {shape} has no dimension {dim} to split")
        if shape[dim] % n:
            raise ValueError(f"shard_rows: dimension {dim} of a leaf of shape {shape} must be a multiple of the "
                             f"{n} devices of mesh axis {axis!r}")
        return jax.device_put(x, sharding)

    return jax.tree.map(put, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array of ``tree`` (params, optimiser state, a ``TrainState``, keys) on every device."""
    return jax.device_put(tree, replicated(mesh))


def is_replicated(x: jax.Array, mesh: Mesh) -> bool:
    """``x`` lives whole on every device of ``mesh``."""
    s = x.sharding
    return s.device_set == set(mesh.devices.flat) and s.is_fully_replicated


def is_row_sharded(x: jax.Array, mesh: Mesh, axis: str = "data", dim: int = 0) -> bool:
    """``x`` is split on dimension ``dim`` over the devices of ``axis`` (each holds ``1/n`` of it)."""
    n = axis_size(mesh, axis)
    s = x.sharding
    if s.device_set != set(mesh.devices.flat):
        return False
    shard = s.shard_shape(x.shape)
    return shard[dim] * n == x.shape[dim] and all(a == b for i, (a, b) in enumerate(zip(shard, x.shape)) if i != dim)


# ----------------------------------------------------------------------------------------------------
# Training


def _on_mesh(x, mesh: Mesh, axis: str):
    """Leave ``x`` where it is if it already lives on the mesh's devices, else split its rows (replicate
    when the row count does not divide)."""
    devices = set(mesh.devices.flat)
    if isinstance(x, jax.Array) and x.sharding.device_set == devices:
        return x
    n = axis_size(mesh, axis)
    if np.ndim(x) >= 1 and np.shape(x)[0] % n == 0:
        return jax.device_put(x, row_sharding(mesh, axis))
    return jax.device_put(x, replicated(mesh))


def make_data_parallel_chunk(update: Callable, batch_size: int, chunk: int, mesh: Mesh, axis: str = "data",
                             keys: Sequence[str] | None = BC_KEYS) -> Callable:
    """``train_bc.make_train_chunk`` over ``mesh``: ``chunk(state, data, key) -> (state, metrics)``, ``chunk``
    updates in one jitted ``lax.scan``, minibatches of ``batch_size`` rows drawn in-graph (uniformly with
    replacement, the same indices as ``make_train_chunk`` for the same key).

    Each minibatch is split on its rows over ``axis`` (``batch_size`` must be a multiple of the device count);
    ``state`` (params and optimiser state) is replicated in and out, so gradients and the loss are reduced
    over devices by the SPMD partitioner. ``data``: dict of ``[M, ...]`` arrays, best placed once with
    ``shard_rows`` (leaves not yet on the mesh are placed on each call). ``keys``: the data entries a
    minibatch carries (default: the BC ones; ``None``: all). ``update(state, batch) -> (state, metrics)`` as
    from ``learners.common.make_update``. The jitted function is ``chunk_fn.jitted`` (for ``.lower``).
    """
    n = axis_size(mesh, axis)
    if batch_size < 1 or chunk < 1:
        raise ValueError(f"batch_size and chunk must be >= 1, got {batch_size} and {chunk}")
    if batch_size % n:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the {n} devices of mesh axis {axis!r}")
    rows, rep = row_sharding(mesh, axis), replicated(mesh)

    def one(carry, key):
        state, data = carry
        names = tuple(data) if keys is None else tuple(keys)
        m = data[names[0]].shape[0]
        idx = jax.random.randint(key, (batch_size,), 0, m)
        # The model batch: rows over devices (the forward/backward pass runs on each device's rows).
        batch = {k: jax.lax.with_sharding_constraint(data[k][idx], rows) for k in names}
        state, metrics = update(state, batch)
        # Params stay replicated between steps (the update's reductions are the cross-device all-reduces).
        state = jax.lax.with_sharding_constraint(state, rep)
        return (state, data), metrics

    def run(state, data, key):
        (state, _), metrics = jax.lax.scan(one, (state, data), jax.random.split(key, chunk))
        return state, metrics

    jitted = jax.jit(run, out_shardings=(rep, rep))

    def place(state, data, key):
        # No-ops once the state lives replicated and the data on the mesh.
        return replicate(state, mesh), jax.tree.map(lambda x: _on_mesh(x, mesh, axis), data), replicate(key, mesh)

    def chunk_fn(state, data, key):
        return jitted(*place(state, data, key))

    chunk_fn.jitted = jitted
    chunk_fn.place = place
    return chunk_fn


# ----------------------------------------------------------------------------------------------------
# Rollouts


def check_env_sharding(vec_env, mesh: Mesh, axis: str = "data") -> None:
    """ValueError unless ``vec_env`` splits its env batch over ``axis`` of ``mesh``."""
    s = getattr(vec_env, "sharding", None)
    want = env_sharding(mesh, axis)
    if s is None or s.mesh != mesh or tuple(s.spec)[:1] != tuple(want.spec)[:1]:
        raise ValueError(f"{getattr(vec_env, 'id', vec_env)!r}: make the env with "
                         f"make_vec(..., sharding=env_sharding(mesh, {axis!r})) to roll it out over the mesh; "
                         f"its sharding is {s}")


def sharded_rollout(vec_env, policy_fn, params, key, num_steps: int, mesh: Mesh, axis: str = "data", **kwargs):
    """``learners.rollout.rollout`` with the env batch split over ``axis`` and the policy params replicated:
    the returned time-major ``Trajectory`` is split on its env axis (dimension 1). ``vec_env`` must be made
    with ``sharding=env_sharding(mesh, axis)``. ``kwargs``: ``rollout``'s (``history_len``, ``bos_id``, ...)."""
    check_env_sharding(vec_env, mesh, axis)
    rep = replicated(mesh)
    return rollout(vec_env, policy_fn, jax.device_put(params, rep), jax.device_put(key, rep), num_steps, **kwargs)

"""Data-parallel BC and rollouts over a 4-device mesh (``learners.parallel``; forced host devices, in a subprocess).

The subprocess checks, against the same computation on one device from the same init and keys:
(1) an in-graph dataset generated with the env batch split over 4 devices is the unsharded one, and stays split;
(2) BC chunks with ``make_data_parallel_chunk`` give the losses and params of ``train_bc.make_train_chunk``
(float tolerance), with the in-graph minibatch split over the 4 devices, params replicated in and out and
the gradients all-reduced;
(3) a sampled GPT-2 token-policy rollout of the sharded env is the unsharded rollout token for token, and its
``Trajectory`` is split on the env axis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from flax.training import train_state
    import jaxlm_gym
    from learners import parallel as par
    from learners.bc import bc_loss_fn
    from learners.common import make_optimizer, make_update
    from learners.datasets import generate_dataset, maze_expert
    from learners.models import GPT2Config, init_params, make_apply_fn
    from learners.rollout import VocabMap, bc_batch, make_token_policy, rollout, stop_token_id
    from learners.train_bc import make_train_chunk

    assert len(jax.devices()) == 4, jax.devices()
    mesh = par.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.shape["data"] == 4

    # ---- (1) dataset: env batch over 4 devices == one device
    kw = dict(obs_mode="tokens", action_mode="tokens")
    senv = jaxlm_gym.make_vec("maze-fo", 8, sharding=par.env_sharding(mesh), **kw)
    penv = jaxlm_gym.make_vec("maze-fo", 8, **kw)
    bos = penv.tokenizer.eos_id
    k_data = jax.random.key(0)
    s_traj = generate_dataset(senv, maze_expert(senv), k_data, 4, 0.5, bos_id=bos)
    p_traj = generate_dataset(penv, maze_expert(penv), k_data, 4, 0.5, bos_id=bos)
    for a, b in zip(jax.tree.leaves(s_traj), jax.tree.leaves(p_traj)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert par.is_row_sharded(a, mesh, dim=1), a.sharding  # [T, N, ...]: split on envs
    assert s_traj.done.any() or s_traj.reward.any()  # the data is not all empty steps
    vocab = VocabMap.for_env(penv)
    p_data = bc_batch(p_traj, vocab)
    s_data = par.shard_rows(bc_batch(s_traj, vocab), mesh)
    for k in p_data:
        np.testing.assert_array_equal(np.asarray(s_data[k]), np.asarray(p_data[k]))
        assert par.is_row_sharded(s_data[k], mesh), (k, s_data[k].sharding)

    # ---- (2) BC: 4-way data parallel == one device
    cfg = GPT2Config(vocab_size=vocab.size, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    tx = make_optimizer(1e-3, 0.01)
    make_state = jax.jit(lambda p: train_state.TrainState.create(apply_fn=make_apply_fn(cfg), params=p, tx=tx))
    state0 = make_state(init_params(cfg, jax.random.key(1)))
    update = make_update(bc_loss_fn, None)
    seen = {}

    def spy_update(state, batch):  # records the shardings the partitioner gives inside the jitted scan
        jax.debug.inspect_array_sharding(batch["input_ids"], callback=lambda s: seen.setdefault("batch", s))
        leaf = jax.tree.leaves(state.params)[0]
        jax.debug.inspect_array_sharding(leaf, callback=lambda s: seen.setdefault("param", s))
        return update(state, batch)

    batch_size, chunk = 8, 3
    plain = make_train_chunk(update, batch_size, chunk)
    dp = par.make_data_parallel_chunk(spy_update, batch_size, chunk, mesh)
    p_state, s_state = state0, state0
    for c in range(2):  # two chunks: the second starts from the replicated state the first returned
        key = jax.random.fold_in(jax.random.key(2), c)
        p_state, p_m = plain(p_state, p_data, key)
        s_state, s_m = dp(s_state, s_data, key)
        np.testing.assert_allclose(s_m["loss"], p_m["loss"], rtol=1e-4)
        np.testing.assert_allclose(s_m["grad_norm"], p_m["grad_norm"], rtol=1e-3)
    assert np.all(np.isfinite(np.asarray(s_m["loss"])))
    # Adam divides by sqrt(v): float-order differences of near-zero gradients move a parameter by a tiny
    # fraction of one step (lr 1e-3), hence the absolute tolerance on top of rtol.
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(s_state.params), jax.tree.leaves(p_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=str(path))
    assert all(par.is_replicated(x, mesh) for x in jax.tree.leaves(s_state)), "state must stay replicated"
    assert seen["batch"].is_equivalent_to(par.row_sharding(mesh), 2), seen["batch"]
    assert len(seen["batch"].device_set) == 4
    assert seen["param"].is_fully_replicated, seen["param"]
    hlo = dp.jitted.lower(*dp.place(s_state, s_data, key)).compile().as_text()
    assert "all-reduce" in hlo  # gradients / loss reduced across devices

    # ---- (3) token-policy rollout: sharded env == unsharded env, token for token (sampled, not greedy)
    policy = make_token_policy(cfg, stop_token_id=stop_token_id(penv), pad_token_id=penv.pad_id,
                               max_new_tokens=4, vocab=vocab, greedy=False)
    params = jax.device_get(s_state.params)
    k_roll = jax.random.key(3)
    s_roll = par.sharded_rollout(senv, policy, params, k_roll, 3, mesh, bos_id=bos)
    p_roll = rollout(penv, policy, params, k_roll, 3, bos_id=bos)
    for a, b in zip(jax.tree.leaves(s_roll), jax.tree.leaves(p_roll)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert par.is_row_sharded(a, mesh, dim=1), a.sharding
    assert np.asarray(s_roll.action_mask).any()

    # ---- errors
    for bad, needle in [(lambda: par.make_data_parallel_chunk(update, 6, 1, mesh), "multiple of the 4 devices"),
                        (lambda: par.shard_rows({"x": np.zeros((6, 2))}, mesh), "multiple of the 4 devices"),
                        (lambda: par.sharded_rollout(penv, policy, params, k_roll, 3, mesh), "env_sharding"),
                        (lambda: par.shard_rows({"x": np.zeros(4)}, mesh, axis="model"), "its axes are")]:
        try:
            bad()
        except ValueError as e:
            assert needle in str(e), str(e)
        else:
            raise AssertionError(needle)
    print("PARALLEL-TRAINING-OK")
""")


def test_data_parallel_bc_and_rollout_on_four_host_devices():
    # Level-0 LLVM codegen: the script is compile-bound (six programs); both sides of every comparison are
    # compiled with the same flags.
    flags = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "PARALLEL-TRAINING-OK" in out.stdout

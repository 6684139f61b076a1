"""learners.checkpoints: orbax save / resume / best-by-score, retention (best + latest), config, errors."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax.training import train_state

from learners.checkpoints import Checkpointer
from learners.ilql import ILQLState

SCORES = {1: 0.5, 2: 0.9, 3: 0.7, 4: 0.1}  # best by max: 2; by min: 4


def assert_trees_equal(got, want):
    assert type(got) is type(want)
    assert jax.tree.structure(got) == jax.tree.structure(want)  # includes static fields (apply_fn, tx)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert type(g) is type(w), (type(g), type(w))
        if isinstance(w, jax.Array) and jax.dtypes.issubdtype(w.dtype, jax.dtypes.prng_key):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(jax.random.key_data(g), jax.random.key_data(w))
        elif isinstance(w, (jax.Array, np.ndarray)):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
        else:
            assert g == w


@pytest.fixture(scope="module")
def states():
    """A tiny Dense + adamw TrainState after 0..4 updates (distinct params, opt_state and step)."""
    model = nn.Dense(3)
    params = model.init(jax.random.key(0), jnp.ones((1, 4)))
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adamw(1e-2))
    state = state.replace(step=jnp.asarray(0, jnp.int32))  # as after a jitted update (Python ints: see mixed leaves)
    update = jax.jit(lambda state, g: state.apply_gradients(grads=jax.tree.map(lambda p: p * g, state.params)))
    out = [state]
    for i in range(1, 5):
        out.append(update(out[-1], 0.1 * i))
    assert [int(s.step) for s in out] == [0, 1, 2, 3, 4]
    return out


def save_all(ckpt, states, steps=(1, 2, 3, 4), scores=SCORES, **kw):
    for s in steps:
        assert ckpt.save(s, states[s], metrics=None if scores is None else {"score": scores[s], "loss": -s}, **kw)


def test_restore_latest_and_given_step(tmp_path, states):
    ckpt = Checkpointer(tmp_path / "run", max_to_keep=None)
    assert ckpt.latest_step() is None and ckpt.all_steps() == []
    save_all(ckpt, states)
    assert ckpt.all_steps() == [1, 2, 3, 4] and ckpt.latest_step() == 4
    assert os.path.isabs(ckpt.directory) and sorted(os.listdir(ckpt.directory)) == ["1", "2", "3", "4"]
    latest = ckpt.restore(states[0])
    assert_trees_equal(latest, states[4])  # params, opt_state (adam mu/nu/count) and the int step
    assert latest.apply_fn is states[0].apply_fn and latest.tx is states[0].tx
    assert_trees_equal(ckpt.restore(states[0], step=2), states[2])
    assert ckpt.metrics(3) == {"score": 0.7, "loss": -3}


@pytest.mark.parametrize("mode,best", [("max", 2), ("min", 4)])
def test_best_step(tmp_path, states, mode, best):
    ckpt = Checkpointer(tmp_path, max_to_keep=None, best_mode=mode)
    save_all(ckpt, states)
    assert ckpt.best_step() == best
    assert_trees_equal(ckpt.restore_best(states[0]), states[best])
    # Steps without a usable score never count as best, whatever the mode.
    ckpt.save(5, states[1], metrics={"loss": -100.0})
    ckpt.save(6, states[1], metrics={"score": math.nan})
    ckpt.save(7, states[1])
    assert ckpt.best_step() == best
    assert ckpt.metrics(7) == {} and math.isnan(ckpt.metrics(6)["score"])


def test_best_step_ties_go_to_the_later_step(tmp_path, states):
    ckpt = Checkpointer(tmp_path, max_to_keep=None)
    save_all(ckpt, states, scores={1: 0.3, 2: 0.9, 3: 0.9, 4: 0.1})
    assert ckpt.best_step() == 3


@pytest.mark.parametrize("mode,kept_after_4,kept_after_5", [("max", [2, 3, 4], [2, 5]), ("min", [1, 4], [1, 4, 5])])
def test_retention_keeps_the_best_plus_the_latest(tmp_path, states, mode, kept_after_4, kept_after_5):
    ckpt = Checkpointer(tmp_path, max_to_keep=2, best_mode=mode)
    save_all(ckpt, states)
    assert ckpt.all_steps() == kept_after_4 and ckpt.latest_step() == 4
    assert sorted(os.listdir(tmp_path), key=int) == [str(s) for s in kept_after_4]
    assert_trees_equal(ckpt.restore(states[0]), states[4])  # resume point survives its poor score (max mode)
    ckpt.save(5, states[1], metrics={"score": 0.8})
    assert ckpt.all_steps() == kept_after_5
    assert sorted(os.listdir(tmp_path), key=int) == [str(s) for s in kept_after_5]


def test_orbax_alone_deletes_a_poorly_scored_latest_step(tmp_path, states):
    """Why we pass orbax an explicit policy: max_to_keep + best_fn alone drops the step just saved."""
    options = ocp.CheckpointManagerOptions(max_to_keep=2, best_fn=lambda m: m["score"],
                                           enable_async_checkpointing=False)
    with ocp.CheckpointManager(tmp_path, options=options) as manager:
        for s in (1, 2, 3, 4):
            manager.save(s, args=ocp.args.StandardSave({"w": np.float32(s)}), metrics={"score": SCORES[s]})
        assert manager.all_steps() == [2, 3]


def test_retention_without_scores_keeps_the_most_recent(tmp_path, states):
    ckpt = Checkpointer(tmp_path / "unscored", max_to_keep=2)  # ranked by "score", but no step has one
    save_all(ckpt, states, scores=None)
    assert ckpt.all_steps() == [3, 4] and ckpt.best_step() is None
    plain = Checkpointer(tmp_path / "plain", max_to_keep=2, best=None)
    save_all(plain, states)
    assert plain.all_steps() == [3, 4]


def test_resume_in_a_fresh_checkpointer_and_config(tmp_path, states):
    config = {"lr": 1e-2, "layers": (4, 3), "name": "bc", "nested": {"gamma": np.float32(0.5)}}
    ckpt = Checkpointer(tmp_path, max_to_keep=2)
    assert ckpt.config() is None
    ckpt.save(1, states[1], metrics={"score": jnp.float32(0.5)}, config=config)
    ckpt.save(2, states[2], metrics={"score": 0.25})
    ckpt.close()

    resumed = Checkpointer(tmp_path, max_to_keep=2)  # a new process would do exactly this
    assert resumed.config() == {"lr": 1e-2, "layers": [4, 3], "name": "bc", "nested": {"gamma": 0.5}}
    assert resumed.latest_step() == 2 and resumed.best_step() == 1
    assert resumed.metrics(1) == {"score": 0.5}
    assert_trees_equal(resumed.restore(states[0]), states[2])
    # The driver continues from latest_step() + 1; retention still sees the steps of the first session.
    assert resumed.save(3, states[3], metrics={"score": 0.9})
    assert resumed.all_steps() == [1, 3]
    with pytest.warns(UserWarning, match="different config"):
        resumed.save(4, states[4], config={"lr": 1.0})
    assert resumed.config()["lr"] == 1e-2


def test_dataclass_config(tmp_path, states):
    @dataclasses.dataclass
    class Config:
        lr: float = 3e-4
        steps: int = 10

    ckpt = Checkpointer(tmp_path)
    ckpt.save(0, states[0], config=Config())
    assert ckpt.config() == {"lr": 3e-4, "steps": 10}


def test_ilql_state_with_static_apply_fn_round_trips(tmp_path):
    def apply_fn(params, x):
        return x @ params["w"]

    params = {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "b": jnp.zeros((3,), jnp.bfloat16)}
    tx = optax.adam(1e-3)
    state = ILQLState.create(apply_fn=apply_fn, params=params, tx=tx)
    state = state.replace(step=jnp.asarray(7, jnp.int32), params=jax.tree.map(lambda p: p + 1, state.params))
    ckpt = Checkpointer(tmp_path)
    ckpt.save(7, state, metrics={"score": 1.0})
    target = ILQLState.create(apply_fn=apply_fn, params=params, tx=tx)  # a fresh start, as in a resumed run
    restored = ckpt.restore(target)
    assert_trees_equal(restored, state)  # params, target_params, adam state, step
    assert restored.apply_fn is apply_fn and restored.tx is tx and restored.params["b"].dtype == jnp.bfloat16


def test_mixed_leaves_keep_their_types(tmp_path):
    state = {"a": jnp.ones((2, 2), jnp.float16), "n": np.arange(3, dtype=np.int64), "i": 5, "f": 0.25,
             "key": jax.random.key(3)}
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, state)
    target = {"a": jnp.zeros((2, 2), jnp.float16), "n": np.zeros(3, np.int64), "i": 0, "f": 0.0,
              "key": jax.random.key(0)}
    assert_trees_equal(ckpt.restore(target), state)
    # Abstract leaves: with a sharding they come back as jax.Array, without one as numpy (orbax's rule).
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding) for k, v in state.items()
                if isinstance(v, jax.Array)}
    abstract.update(n=jax.ShapeDtypeStruct((3,), np.int64), i=0, f=0.0)
    restored = ckpt.restore(abstract)
    assert isinstance(restored["a"], jax.Array) and isinstance(restored["n"], np.ndarray)
    assert_trees_equal(restored, state)
    with pytest.raises(ValueError, match=r"cannot restore step 1 .*saved but not in the target: \['f', 'i'"):
        ckpt.restore({"a": target["a"]})


def test_save_not_after_latest_and_force_rewinds(tmp_path, states):
    ckpt = Checkpointer(tmp_path, max_to_keep=None)
    save_all(ckpt, states)
    assert ckpt.save(3, states[1], metrics={"score": 1.0}) is False  # replaying a step does not clobber it
    assert ckpt.save(2, states[1]) is False
    assert_trees_equal(ckpt.restore(states[0], step=3), states[3])
    assert ckpt.save(3, states[1], metrics={"score": 1.0}, force=True)
    assert ckpt.all_steps() == [1, 2, 3] and ckpt.latest_step() == 3 and ckpt.best_step() == 3
    assert_trees_equal(ckpt.restore(states[0]), states[1])


def test_async_save_then_wait(tmp_path, states):
    ckpt = Checkpointer(tmp_path, async_save=True)
    assert ckpt.save(1, states[1], metrics={"score": 0.1})
    ckpt.wait()
    assert ckpt.all_steps() == [1]
    assert_trees_equal(ckpt.restore(states[0]), states[1])
    ckpt.close()


def test_errors(tmp_path, states):
    with pytest.raises(ValueError, match=r"best_mode must be one of \('max', 'min'\)"):
        Checkpointer(tmp_path, best_mode="maximum")
    with pytest.raises(ValueError, match="max_to_keep must be None"):
        Checkpointer(tmp_path, max_to_keep=0)
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(ValueError, match="no checkpoint in .*nothing to restore"):
        ckpt.restore(states[0])
    ckpt.save(1, states[1], metrics={"loss": 1.0})
    ckpt.save(2, states[2], metrics={"loss": 0.5})
    with pytest.raises(ValueError, match=r"no checkpoint for step 5 .*saved steps: \[1, 2\]"):
        ckpt.restore(states[0], step=5)
    with pytest.raises(ValueError, match=r"no checkpoint for step 5 .*saved steps: \[1, 2\]"):
        ckpt.metrics(5)
    with pytest.raises(ValueError, match=r"no saved step has a usable metric 'score'.*\[1, 2\]"):
        ckpt.restore_best(states[0])
    with pytest.raises(ValueError, match="best=None"):
        Checkpointer(tmp_path, best=None).best_step()
    with pytest.raises(ValueError, match="step must be >= 0"):
        ckpt.save(-1, states[1])
    with pytest.raises(ValueError, match=r"metrics\['bad'\]: object values are not JSON-able"):
        ckpt.save(3, states[3], metrics={"bad": object()})
    with pytest.raises(ValueError, match="keys must be strings"):
        ckpt.save(3, states[3], config={1: "x"})
    wrong_shape = states[0].replace(params=jax.tree.map(lambda p: jnp.zeros(p.shape + (2,), p.dtype), states[0].params))
    with pytest.raises(ValueError, match=r"cannot restore step 2 .*params/params/kernel: saved shape \(4, 3\), "
                                         r"target shape \(4, 3, 2\)"):
        ckpt.restore(wrong_shape)
    with pytest.raises(ValueError, match=r"saved but not in the target: \['opt_state/0/count'"):
        ckpt.restore(states[0].replace(opt_state=optax.sgd(0.1).init(states[0].params)))
    assert ckpt.all_steps() == [1, 2]  # failed saves wrote nothing


SHARDED = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from learners.checkpoints import Checkpointer
    assert len(jax.devices()) == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("d",))
    rows = NamedSharding(mesh, P("d"))
    state = {"w": jax.device_put(jnp.arange(32.0).reshape(8, 4), rows), "b": jnp.arange(4, dtype=jnp.int32)}
    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(1, state, metrics={"score": 1.0})
    # Into a sharded target: the target's sharding comes back.
    got = ckpt.restore({"w": jax.device_put(jnp.zeros((8, 4)), rows), "b": jnp.zeros(4, jnp.int32)})
    assert got["w"].sharding == rows, got["w"].sharding
    np.testing.assert_array_equal(got["w"], state["w"])
    # Into an unsharded (one device) target, and into abstract leaves with a column sharding.
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    got = ckpt.restore({"w": jax.device_put(jnp.zeros((8, 4)), one), "b": jnp.zeros(4, jnp.int32)})
    assert got["w"].sharding == one
    np.testing.assert_array_equal(got["w"], state["w"])
    cols = NamedSharding(mesh, P(None, "d"))
    got = ckpt.restore({"w": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=cols),
                        "b": jax.ShapeDtypeStruct((4,), jnp.int32, sharding=one)})
    assert got["w"].sharding == cols and got["b"].dtype == jnp.int32
    np.testing.assert_array_equal(got["w"], state["w"])
    print("OK")
""")


def test_sharded_cpu_arrays(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", SHARDED, str(tmp_path)], check=False, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]

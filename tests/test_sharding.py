"""``sharding=`` splits the env batch over devices (4 forced host devices, in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import jaxlm_gym
    assert len(jax.devices()) == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("envs",))
    for sharding in (mesh, NamedSharding(mesh, P("envs"))):
        for env_id in ("maze-fo", "maze-po"):
            sharded = jaxlm_gym.make_vec(env_id, 8, obs_mode="both", action_mode="tokens", sharding=sharding)
            plain = jaxlm_gym.make_vec(env_id, 8, obs_mode="both", action_mode="tokens")
            table = jnp.asarray(plain.action_token_table())

            def rollout(vec, key):
                obs, state = vec.reset(key)
                def body(state, k):
                    a = table[jax.random.randint(k, (8,), 0, 4)]
                    obs, state, r, te, tr, info = vec.step(k, state, a)
                    return state, (obs["tokens"], r)
                return jax.lax.scan(body, state, jax.random.split(key, 12))

            s_state, (s_tok, s_r) = jax.jit(lambda k: rollout(sharded, k))(jax.random.key(0))
            p_state, (p_tok, p_r) = jax.jit(lambda k: rollout(plain, k))(jax.random.key(0))
            np.testing.assert_array_equal(s_tok, p_tok)
            np.testing.assert_array_equal(s_r, p_r)
            assert len(s_state.pos.sharding.device_set) == 4, s_state.pos.sharding
            assert s_state.pos.sharding.spec[0] == "envs" or s_state.pos.sharding.spec[0] == ("envs",)
    try:
        jaxlm_gym.make_vec("maze-fo", 6, sharding=mesh)
    except ValueError as e:
        assert "multiple of the 4 devices" in str(e)
    else:
        raise AssertionError("6 envs on 4 devices must be refused")
    print("SHARDING-OK")
""")


def test_env_batch_sharded_over_four_host_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHARDING-OK" in out.stdout

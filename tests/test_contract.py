"""The env contract, checked for every registered env in every observation mode."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym

N = 4
STEPS = 12
MODES = [("symbolic", "index"), ("tokens", "tokens"), ("both", "index")]
ALL_IDS = jaxlm_gym.list_envs()
# Variants of one LLF family share every line of code and differ only in tables, so the
# compiled checks run on two bandits (2 and 10 arms) and two optimization functions; every
# id still gets the traced checks (``test_every_id_traces_to_stable_shapes``) and the core
# checks. Compiles dominate the suite's time on CI's 2 cores.
REPRESENTATIVE = {"llf-bandits-BanditTwoArmedHighLowFixed-v0", "llf-bandits-BanditTenArmedGaussian-v0",
                  "llf-optimization-Booth-v0", "llf-optimization-Rosenbrock-v0"}
IDS = [e for e in ALL_IDS if not e.startswith(("llf-bandits-", "llf-optimization-")) or e in REPRESENTATIVE]
CASES = [(e, o, a) for e in IDS for o, a in MODES]


#: Config that makes episodes end (tasks whose reference never ends an episode by itself).
ENDING = {"llf-bandits": {"horizon": 3}, "llf-optimization": {"horizon": 3}}


def _make(env_id, obs_mode, action_mode, **config):
    for prefix, extra in ENDING.items():
        if env_id.startswith(prefix):
            config = {**extra, **config}
    return jaxlm_gym.make_vec(env_id, N, obs_mode=obs_mode, action_mode=action_mode, **config)


def _texts(vec):
    """The task's action texts (examples, for tasks with infinitely many) and a non-action."""
    return list(vec.action_strings) + ["not an action"]


def _actions(vec, key):
    """Random actions, including the "no action" index / a text that is no action."""
    if vec.action_mode == "tokens":
        texts = _texts(vec)
        width = max(4, *(len(vec.tokenizer.encode(t)) for t in texts))
        table = np.stack([vec.encode_action(t, width) for t in texts])
        return jnp.asarray(table)[jax.random.randint(key, (N,), 0, len(texts))]
    if not vec.discrete:
        space = vec.env.action_space(vec.params)
        return jax.vmap(space.sample)(jax.random.split(key, N))
    return jax.random.randint(key, (N,), 0, vec.num_actions + 1)


def _rollout(vec, key, steps=STEPS, params=None):
    step = jax.jit(lambda k, s, a: vec.step(k, s, a, params))
    obs, state = jax.jit(lambda k: vec.reset(k, params))(key)
    out = [(obs, state, None, None, None, None)]
    for k in jax.random.split(key, steps):
        ka, ks = jax.random.split(k)
        obs, state, r, te, tr, info = step(ks, state, _actions(vec, ka))
        out.append((obs, state, r, te, tr, info))
    return out


def _spec(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype), tree)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: "-".join(c))
def case(request):
    env_id, obs_mode, action_mode = request.param
    vec = _make(env_id, obs_mode, action_mode)
    # A short time limit so every rollout crosses an auto-reset.
    params = vec.params.replace(max_steps_in_episode=3) if hasattr(vec.params, "max_steps_in_episode") \
        else vec.params
    return vec, params, _rollout(vec, jax.random.key(7), params=params)


def test_shapes_and_dtypes_are_stable(case):
    vec, _, traj = case
    obs0, state0 = traj[0][:2]
    for obs, state, r, te, tr, info in traj[1:]:
        assert _spec(obs) == _spec(obs0)
        assert _spec(state) == _spec(state0)
        assert r.shape == (N,) and r.dtype == jnp.float32
        assert te.shape == tr.shape == (N,) and te.dtype == tr.dtype == jnp.bool_
        assert _spec(info["final_observation"]) == _spec(obs0)
    assert set(obs0) >= {"facts"}
    if vec.obs_mode != "symbolic":
        assert obs0["tokens"].shape == (N, vec.max_tokens) and obs0["tokens"].dtype == jnp.int32
        assert obs0["length"].shape == (N,) and obs0["mask"].dtype == jnp.bool_
    if vec.obs_mode != "tokens":
        assert "symbolic" in obs0


def test_same_key_same_result(case):
    vec, params, traj = case
    again = _rollout(vec, jax.random.key(7), params=params)
    chex.assert_trees_all_equal([t[:5] for t in traj[1:]], [t[:5] for t in again[1:]])
    other = _rollout(vec, jax.random.key(8), params=params)
    leaves = lambda tr: np.concatenate([np.ravel(x) for x in jax.tree.leaves([t[1] for t in tr])])  # noqa: E731
    assert not np.array_equal(leaves(traj), leaves(other))


def test_no_nan_and_tokens_in_vocab(case):
    vec, _, traj = case
    for obs, state, r, *_ in traj:
        chex.assert_tree_all_finite(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), (obs, state)))
        if r is not None:
            assert np.isfinite(np.asarray(r)).all()
        if vec.obs_mode != "symbolic":
            tokens = np.asarray(obs["tokens"])
            assert (tokens >= 0).all() and (tokens < vec.tokenizer.vocab_size).all()
            assert (np.asarray(obs["mask"]).sum(1) == np.asarray(obs["length"])).all()


def test_decoded_tokens_equal_host_text(case):
    vec, _, traj = case
    if vec.obs_mode == "symbolic":
        pytest.skip("no tokens in symbolic mode")
    tok = vec.tokenizer
    for obs, *_ in traj:
        texts = vec.decode(obs)
        for i, text in enumerate(texts):
            ids = np.asarray(obs["tokens"][i][: int(obs["length"][i])]).tolist()
            assert tok.decode(ids) == text
            assert ids == tok.encode(text)


def test_auto_reset_and_final_observation(case):
    vec, params, traj = case
    saw_done = False
    for (prev_obs, prev_state, *_), (obs, state, r, te, tr, info) in zip(traj, traj[1:]):
        te, tr = np.asarray(te), np.asarray(tr)
        assert not (te & tr).any(), "an episode ends by terminating or by truncating, not both"
        done = te | tr
        final = info["final_observation"]
        for i in range(N):
            pick = lambda x: np.asarray(x)[i]  # noqa: E731
            if done[i]:
                saw_done = True
                assert int(state.time[i]) == 0  # a fresh episode
            else:
                chex.assert_trees_all_equal(jax.tree.map(pick, final), jax.tree.map(pick, obs))
    assert saw_done, "max_steps_in_episode=3 must end episodes within the rollout"
    # The pre-reset observation must itself be a valid observation of the task.
    assert all(isinstance(t, str) for t in vec.decode(traj[-1][5]["final_observation"]))


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("obs_mode,action_mode", [("symbolic", "index"), ("both", "tokens")])
def test_single_compile(env_id, obs_mode, action_mode):
    vec = _make(env_id, obs_mode, action_mode)
    chex.clear_trace_counter()
    step = jax.jit(chex.assert_max_traces(vec.step, n=1))
    reset = jax.jit(chex.assert_max_traces(vec.reset, n=1))
    obs, state = reset(jax.random.key(0))
    reset(jax.random.key(1))
    for k in jax.random.split(jax.random.key(2), 5):
        obs, state, *_ = step(k, state, _actions(vec, k))

    # ... and inside lax.scan: one trace of the body for the whole rollout.
    def body(state, k):
        obs, state, r, *_ = vec.step(k, state, _actions(vec, k))
        return state, r

    scan = jax.jit(chex.assert_max_traces(lambda s, k: jax.lax.scan(body, s, jax.random.split(k, 20)), n=1))
    scan(state, jax.random.key(3))
    scan(state, jax.random.key(4))


@pytest.mark.parametrize("env_id", IDS)
def test_vmap_equals_loop_of_single_envs(env_id):
    """The batch is exactly N independent envs: env i sees key i of the split."""
    vec = _make(env_id, "both", "index")
    env, params, text = vec.env, vec.params, vec.text
    key = jax.random.key(3)
    obs, state = vec.reset(key)

    @jax.jit
    def render_keyed(facts, text_key):
        if text_key is not None:
            facts = text.draw(text_key, facts)
        if vec.task_text.prepare is not None:
            facts = vec.task_text.prepare(facts)
        return text.render(facts)

    def render_one(facts, text_keys, i):
        # The text of env i alone: its paraphrase draws come from text key i.
        return render_keyed(facts, None if text_keys is None else text_keys[i])

    keys, text_keys = vec._split(key)
    for i in range(N):
        o, s = env.reset(keys[i], params)
        chex.assert_trees_all_equal(s, jax.tree.map(lambda x: x[i], state))
        chex.assert_trees_all_equal(render_one(o["facts"], text_keys, i), jax.tree.map(lambda x: x[i], {
            k: obs[k] for k in ("tokens", "length", "mask")}))
    for t, k in enumerate(jax.random.split(jax.random.key(4), 6)):
        action = _actions(vec, jax.random.fold_in(k, 1))
        new_obs, new_state, r, te, tr, _ = vec.step(k, state, action)
        keys, text_keys = vec._split(k)
        for i in range(N):
            a = jax.tree.map(lambda x: x[i], action)
            o, s, ri, tei, tri, _ = env.step(keys[i], jax.tree.map(lambda x: x[i], state), a, params)
            chex.assert_trees_all_equal(s, jax.tree.map(lambda x: x[i], new_state))
            chex.assert_trees_all_equal((ri, tei, tri), (r[i], te[i], tr[i]))
            chex.assert_trees_all_equal(o["symbolic"], jax.tree.map(lambda x: x[i], new_obs["symbolic"]))
            chex.assert_trees_all_equal(render_one(o["facts"], text_keys, i), jax.tree.map(lambda x: x[i], {
                k: new_obs[k] for k in ("tokens", "length", "mask")}))
        state = new_state


def _check_space(space, x, path="obs"):
    """Every leaf of ``x`` has the shape and lies in the range its space declares."""
    from gymnax.environments import spaces

    if isinstance(space, spaces.Dict):
        if path == "obs.facts":  # the text layer adds derived facts (paraphrase draws, joins)
            x = {k: v for k, v in x.items() if k in space.spaces}
        assert set(space.spaces) == set(x), (path, sorted(space.spaces), sorted(x))
        for k, sub in space.spaces.items():
            _check_space(sub, x[k], f"{path}.{k}")
    elif isinstance(space, spaces.Box):
        x = np.asarray(x)
        assert x.shape[1:] == tuple(space.shape), (path, x.shape, space.shape)
        assert (x >= np.asarray(space.low)).all() and (x <= np.asarray(space.high)).all(), (path, x)
    elif isinstance(space, spaces.Discrete):
        x = np.asarray(x)
        assert x.ndim == 1 and ((x >= 0) & (x < space.n)).all(), (path, x)
    else:
        raise AssertionError(f"{path}: unexpected space {space!r}")


def test_observations_lie_in_the_observation_space(case):
    vec, params, traj = case
    space = vec.env.observation_space(params)
    for obs, *_ in traj:
        core = {"facts": obs["facts"]}
        if "symbolic" in obs:
            core["symbolic"] = obs["symbolic"]
        else:
            space = type(space)({"facts": space.spaces["facts"]})
        _check_space(space, core)


@pytest.mark.parametrize("env_id", jaxlm_gym.list_envs())
def test_core_is_a_gymnax_environment(env_id):
    from gymnax.environments.environment import Environment

    env, params = jaxlm_gym.make(env_id)
    assert isinstance(env, Environment)
    obs, state = env.reset(jax.random.key(0), params)
    action = env.action_space(params).sample(jax.random.key(5))
    out = env.step(jax.random.key(1), state, action, params)
    assert len(out) == 6 and {"terminated", "truncated", "final_observation"} <= set(out[5])
    # gymnax wrappers work unchanged on the core.
    from gymnax.wrappers.purerl import LogWrapper

    logged = LogWrapper(env)
    o, s = logged.reset(jax.random.key(0), params)
    logged.step(jax.random.key(1), s, action, params)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_every_id_traces_to_stable_shapes(env_id):
    """Every id (all variants): reset and step trace in tokens mode, text in and out, and
    the step's outputs have the reset's shapes and dtypes (traced only: no compile)."""
    vec = _make(env_id, "both", "tokens")
    key = jax.random.key(0)
    obs, state = jax.eval_shape(vec.reset, key)
    action = jax.eval_shape(lambda k: _actions(vec, k), key)
    out = jax.eval_shape(vec.step, key, state, action)
    assert _spec(out[0]) == _spec(obs) and _spec(out[1]) == _spec(state)
    assert out[2].shape == (N,) and out[2].dtype == jnp.float32
    assert obs["tokens"].shape == (N, vec.max_tokens)

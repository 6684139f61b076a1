"""The env contract, checked for every registered env in every observation mode."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layout_check import assert_pieces_within_reach

import jaxlm_gym

N = 4
STEPS = 12
# symbolic observations with index actions; text and symbolic observations with token
# actions (the in-graph parser). Each case compiles one program: reset, then STEPS steps
# in a lax.scan (compiles dominate the suite's time on CI's 2 cores).
MODES = [("symbolic", "index"), ("both", "tokens")]
ALL_IDS = jaxlm_gym.list_envs()
# Variants of one LLF family share every line of code and differ only in tables, so the
# compiled checks run on one bandit and one optimization function; every id still gets the
# traced checks (``test_every_id_traces_to_stable_shapes``, ``test_core_is_a_gymnax_environment``).
REPRESENTATIVE = {"llf-bandits-BanditTenArmedGaussian-v0", "llf-optimization-Booth-v0"}
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


def _token_table(vec):
    texts = _texts(vec)
    width = max(4, *(len(vec.tokenizer.encode(t)) for t in texts))
    return jnp.asarray(np.stack([vec.encode_action(t, width) for t in texts]))


def _actions(vec, key, table=None):
    """Random actions, including the "no action" index / a text that is no action."""
    if vec.action_mode == "tokens":
        table = _token_table(vec) if table is None else table
        return table[jax.random.randint(key, (N,), 0, table.shape[0])]
    if not vec.discrete:
        space = vec.env.action_space(vec.params)
        return jax.vmap(space.sample)(jax.random.split(key, N))
    return jax.random.randint(key, (N,), 0, vec.num_actions + 1)


def _rollout_fn(vec, params, steps=STEPS, traces=None):
    """One jitted program ``key -> (obs0, state0, per-step records)``: reset, then ``steps``
    random steps in a ``lax.scan``. Each record holds the step's key, the state and action
    it started from, and everything ``step`` returned. ``traces`` (a list) gets one entry
    per trace of the program and of the scan body: more than one each is a recompile.
    (``chex.assert_max_traces`` counts per code location, shared by every case.)"""
    table = _token_table(vec) if vec.action_mode == "tokens" else None
    traces = [] if traces is None else traces

    def body(state, k):
        traces.append("body")
        ka, ks = jax.random.split(k)
        action = _actions(vec, ka, table)
        obs, new_state, r, te, tr, info = vec.step(ks, state, action, params)
        return new_state, {"key": ks, "prev_state": state, "action": action, "obs": obs, "state": new_state,
                           "reward": r, "terminated": te, "truncated": tr, "info": info}

    def run(key):
        traces.append("run")
        obs, state = vec.reset(key, params)
        _, rec = jax.lax.scan(body, state, jax.random.split(key, steps))
        return obs, state, rec

    return jax.jit(run)


def _trajectory(out):
    """``[(obs, state, r, te, tr, info), ...]`` on the host; entry 0 is the reset (r.. None)."""
    obs0, state0, rec = jax.device_get(out)
    traj = [(obs0, state0, None, None, None, None)]
    for t in range(rec["reward"].shape[0]):
        at = jax.tree.map(lambda x: x[t], {k: v for k, v in rec.items() if k != "key"})
        traj.append((at["obs"], at["state"], at["reward"], at["terminated"], at["truncated"], at["info"]))
    return traj


def _spec(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype), tree)


class Case:
    def __init__(self, env_id, obs_mode, action_mode):
        self.vec = vec = _make(env_id, obs_mode, action_mode)
        # A short time limit so every rollout crosses an auto-reset.
        self.params = vec.params.replace(max_steps_in_episode=3) if hasattr(vec.params, "max_steps_in_episode") \
            else vec.params
        self.traces = []
        self.run = _rollout_fn(vec, self.params, traces=self.traces)
        self.raw = self.run(jax.random.key(7))
        self.traj = _trajectory(self.raw)

    def __iter__(self):  # vec, params, traj = case
        return iter((self.vec, self.params, self.traj))


@pytest.mark.parametrize("env_id,obs_mode,action_mode", CASES, ids=["-".join(c) for c in CASES])
def test_contract(env_id, obs_mode, action_mode):
    """Every check of the contract on one compiled case (one test, so that the case is
    compiled once whichever worker runs it)."""
    case = Case(env_id, obs_mode, action_mode)
    for check in CHECKS:
        check(case)


def check_shapes_and_dtypes_are_stable(case):
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


def check_same_key_same_result(case):
    """Determinism, and no recompile: the case's program runs again on other keys (its
    trace counter stays at one trace of the program and one of the scan body)."""
    traj = case.traj
    again = _trajectory(case.run(jax.random.key(7)))
    chex.assert_trees_all_equal([t[:5] for t in traj[1:]], [t[:5] for t in again[1:]])
    other = _trajectory(case.run(jax.random.key(8)))
    assert sorted(case.traces) == ["body", "run"], case.traces
    leaves = lambda tr: np.concatenate([np.ravel(x) for x in jax.tree.leaves([t[1] for t in tr])])  # noqa: E731
    assert not np.array_equal(leaves(traj), leaves(other))


def check_no_nan_and_tokens_in_vocab(case):
    vec, _, traj = case
    for obs, state, r, *_ in traj:
        chex.assert_tree_all_finite(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), (obs, state)))
        if r is not None:
            assert np.isfinite(np.asarray(r)).all()
        if vec.obs_mode != "symbolic":
            tokens = np.asarray(obs["tokens"])
            assert (tokens >= 0).all() and (tokens < vec.tokenizer.vocab_size).all()
            assert (np.asarray(obs["mask"]).sum(1) == np.asarray(obs["length"])).all()


def check_decoded_tokens_equal_host_text(case):
    vec, _, traj = case
    if vec.obs_mode == "symbolic":
        return  # no tokens in symbolic mode
    tok = vec.tokenizer
    for obs, *_ in traj:
        assert_pieces_within_reach(vec.text, obs["facts"])
        texts = vec.decode(obs)
        for i, text in enumerate(texts):
            ids = np.asarray(obs["tokens"][i][: int(obs["length"][i])]).tolist()
            assert tok.decode(ids) == text
            assert ids == tok.encode(text)


def check_auto_reset_and_final_observation(case):
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
                assert int(vec.core_state(state).time[i]) == 0  # a fresh episode
            else:
                chex.assert_trees_all_equal(jax.tree.map(pick, final), jax.tree.map(pick, obs))
    assert saw_done, "max_steps_in_episode=3 must end episodes within the rollout"
    # The pre-reset observation must itself be a valid observation of the task (the text
    # case decodes it; the symbolic one would compile the host text for nothing).
    if vec.obs_mode != "symbolic":
        assert all(isinstance(t, str) for t in vec.decode(traj[-1][5]["final_observation"]))


@pytest.mark.parametrize("env_id", IDS)
def test_single_compile(env_id):
    """``jit(step)`` called from a Python loop traces once (the scan in every case checks
    the same inside a program). State dtypes, weak types included, must not drift; the
    symbolic mode checks the core's state (the token modes add the rendered text to
    Wordle's, checked in test_constant_reset_render)."""
    vec = _make(env_id, "symbolic", "index")
    chex.clear_trace_counter()
    step = jax.jit(chex.assert_max_traces(vec.step, n=1))
    reset = jax.jit(chex.assert_max_traces(vec.reset, n=1))
    obs, state = reset(jax.random.key(0))
    reset(jax.random.key(1))
    for k in jax.random.split(jax.random.key(2), 5):
        obs, state, *_ = step(k, state, _actions(vec, k))


def _assert_same(a, b):
    """Equal leaf by leaf: integers and booleans exactly, floats to a few ulps.

    A vmapped program and a single-env program are different XLA programs; on some CPUs
    (CI's) they fuse float arithmetic differently (FMA), so a float may differ in its last
    bit. Everything discrete (tokens, lengths, flags, counters) must still match exactly.
    """
    def check(x, y):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(x, y)

    chex.assert_trees_all_equal_structs(a, b)
    jax.tree.map(check, a, b)


def check_vmap_equals_loop_of_single_envs(case):
    """The batch is exactly N independent envs: env i sees key i of the split. Replays the
    text case's rollout (token actions, parsed in-graph) env by env through the core."""
    vec, params = case.vec, case.params
    if vec.obs_mode != "both":
        return  # checked on the text case (it has the symbolic observation too)
    env, text = vec.env, vec.text
    obs0, state0, rec = jax.device_get(case.raw)
    reset_one = jax.jit(lambda k: env.reset(k, params))
    step_one = jax.jit(lambda k, s, a: env.step(k, s, a, params))

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

    def row(tree, i):
        return jax.tree.map(lambda x: x[i], tree)

    core = vec.core_state  # Wordle's VecEnv state also holds its rendered tokens

    def tokens(obs, i):
        return row({k: obs[k] for k in ("tokens", "length", "mask")}, i)

    keys, text_keys = vec._split(jax.random.key(7))
    for i in range(N):
        o, s = reset_one(keys[i])
        _assert_same(s, row(core(state0), i))
        chex.assert_trees_all_equal(render_one(o["facts"], text_keys, i), tokens(obs0, i))
    parsed = "action_index" if vec.discrete else "action"
    for t in range(rec["reward"].shape[0]):
        at = jax.tree.map(lambda x: x[t], {k: v for k, v in rec.items() if k != "key"})
        keys, text_keys = vec._split(case.raw[2]["key"][t])
        for i in range(N):
            o, s, ri, tei, tri, _ = step_one(keys[i], row(core(at["prev_state"]), i), row(at["info"][parsed], i))
            _assert_same(s, row(core(at["state"]), i))
            _assert_same((ri, tei, tri), (at["reward"][i], at["terminated"][i], at["truncated"][i]))
            _assert_same(o["symbolic"], row(at["obs"]["symbolic"], i))
            chex.assert_trees_all_equal(render_one(o["facts"], text_keys, i), tokens(at["obs"], i))


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


def check_observations_lie_in_the_observation_space(case):
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
    """The core is a gymnax ``Environment`` whose step returns gymnax 1.0's 6-tuple, and
    gymnax's own wrappers run on it unchanged (traced: the cases run the numbers)."""
    from gymnax.environments.environment import Environment
    from gymnax.wrappers.purerl import LogWrapper

    env, params = jaxlm_gym.make(env_id)
    assert isinstance(env, Environment)
    obs, state = jax.eval_shape(env.reset, jax.random.key(0), params)
    action = jax.eval_shape(env.action_space(params).sample, jax.random.key(5))
    out = jax.eval_shape(env.step, jax.random.key(1), state, action, params)
    assert len(out) == 6 and {"terminated", "truncated", "final_observation"} <= set(out[5])
    assert _spec(out[5]["final_observation"]) == _spec(obs) and _spec(out[1]) == _spec(state)
    logged = LogWrapper(env)
    o, s = jax.eval_shape(logged.reset, jax.random.key(0), params)
    jax.eval_shape(logged.step, jax.random.key(1), s, action, params)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_every_id_traces_to_stable_shapes(env_id):
    """Every id (all variants): reset and step trace, and the step's outputs have the
    reset's shapes and dtypes (traced only: no compile). Compiled ids trace with text in
    and out; the other variants of a family build their text (tables, token budget,
    piece boundaries: all checked at make time) and trace the core, since tracing their
    text runs the same code as their family's compiled id."""
    mode = ("both", "tokens") if env_id in IDS else ("symbolic", "index")
    if env_id not in IDS:
        assert _make(env_id, "both", "tokens").max_tokens > 0
    vec = _make(env_id, *mode)
    key = jax.random.key(0)
    obs, state = jax.eval_shape(vec.reset, key)
    action = jax.eval_shape(lambda k: _actions(vec, k), key)
    out = jax.eval_shape(vec.step, key, state, action)
    assert _spec(out[0]) == _spec(obs) and _spec(out[1]) == _spec(state)
    assert out[2].shape == (N,) and out[2].dtype == jnp.float32
    if mode[0] == "both":
        assert obs["tokens"].shape == (N, vec.max_tokens)


CHECKS = [check_shapes_and_dtypes_are_stable, check_same_key_same_result, check_no_nan_and_tokens_in_vocab,
          check_decoded_tokens_equal_host_text, check_auto_reset_and_final_observation,
          check_vmap_equals_loop_of_single_envs, check_observations_lie_in_the_observation_space]

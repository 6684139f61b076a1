"""The LLF feedback/instruction machinery, on a toy LLF core (``tests/toy_llf.py``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_llf  # noqa: F401  (registers toy-llf)
from jaxlm_gym import registry
from jaxlm_gym.vec_env import VecEnv


def _vec(n=8, **kw):
    env, params = registry.make("toy-llf", **{k: v for k, v in kw.items() if k.endswith("_type")})
    kw = {k: v for k, v in kw.items() if not k.endswith("_type")}
    return VecEnv("toy-llf", env, params, n, kw.pop("obs_mode", "tokens"), kw.pop("action_mode", "index"), **kw)


def _roll(vec, actions, seed=0):
    # Jitted once per vec: op-by-op (eager) text rendering is far slower than a compile.
    if not hasattr(vec, "_jit"):
        vec._jit = (jax.jit(vec.reset), jax.jit(vec.step))
    reset, step = vec._jit
    obs, state = reset(jax.random.key(seed))
    texts = [vec.decode(obs)]
    outs = [obs]
    for t, k in enumerate(jax.random.split(jax.random.key(seed + 1), len(actions))):
        obs, state, *_ = step(k, state, jnp.full((vec.num_envs,), actions[t], jnp.int32))
        texts.append(vec.decode(obs))
        outs.append(obs)
    return texts, outs


def test_order_join_and_tokens_exact():
    vec = _vec(feedback_type="a")
    tok = vec.tokenizer
    texts, outs = _roll(vec, [1, 0, 2])
    assert texts[0][0] == "Find the better of two arms.\n"
    for t, o in zip(texts, outs):
        for i, s in enumerate(t):
            k = int(o["length"][i])
            assert list(np.asarray(o["tokens"][i][:k])) == tok.encode(s)
    # arm 1: r, hp, fp (order r, hp, hn, fp, fn; one space between)
    s = texts[1][0]
    assert s.endswith("\n") and s.count(". ") == 2 and "1.00" in s, s
    # invalid action (2): r says 0.00, hn, fp
    assert "0.00" in texts[3][0]


def test_types_and_errors():
    with pytest.raises(ValueError, match="supported: \\['b', 'c'\\]"):
        registry.make("toy-llf", instruction_type="p")
    with pytest.raises(ValueError, match="not supported"):
        registry.make("toy-llf", feedback_type={"r", "xx"})
    with pytest.raises(ValueError, match="feedback_type"):
        registry.make("toy-llf", feedback_type=3)
    none_vec = _vec(feedback_type="n")
    texts, _ = _roll(none_vec, [1, 1])
    assert texts[1][0] == "" and texts[2][0] == ""
    c_vec = _vec(instruction_type="c")
    assert _roll(c_vec, [])[0][0][0] == "Find the better arm; it is arm 1.\n"
    only = _vec(feedback_type=("hn", "r"))
    t = _roll(only, [0])[0][1][0]
    assert t.count(".") == 3 and "0.25" in t  # "<r sentence> <hn sentence>\n"


def test_mixture_draws_one_kind_per_step_from_the_key():
    vec = _vec(n=256, feedback_type="m")
    texts, outs = _roll(vec, [1, 1, 1])
    picks = np.concatenate([np.asarray(o["facts"]["fb_mix"]) for o in outs[1:]])
    counts = np.bincount(picks, minlength=5)
    assert counts.min() > 0.12 * len(picks)  # uniform over the 5 kinds
    for o, t in zip(outs[1:], texts[1:]):
        mix = np.asarray(o["facts"]["fb_mix"])
        for m, s in zip(mix, t):
            # arm 1: hn (2) and fn (4) say nothing -> empty feedback
            assert (s == "") == (m in (2, 4)), (m, s)
            assert s.count(". ") == 0
    again, _ = _roll(vec, [1, 1, 1])
    assert again == texts  # keyed: same seed, same draws


def test_paraphrase_pinned_and_drawn():
    pinned = _vec(paraphrase=2)
    t = _roll(pinned, [1])[0][1]
    assert all(s.startswith("Payout 1.00.") and "Well chosen." in s for s in t)
    drawn = _vec(n=64)
    firsts = {s.split(" ")[0] for s in _roll(drawn, [1])[0][1]}
    assert len(firsts) >= 3
    with pytest.raises(ValueError, match="out of range"):
        _vec(paraphrase=4)


def test_text_actions_with_aliases():
    vec = _vec(n=4, action_mode="tokens")
    obs, state = jax.jit(vec.reset)(jax.random.key(0))
    acts = vec.encode_actions(["1", "zero", "one", "2"])
    _, _, r, *_, info = jax.jit(vec.step)(jax.random.key(1), state, jnp.asarray(acts))
    assert np.asarray(info["action_index"]).tolist() == [1, 0, 1, 2]
    np.testing.assert_allclose(np.asarray(r), [1.0, 0.25, 1.0, 0.0])

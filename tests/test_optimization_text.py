"""LLF optimization text (``jaxlm_gym.tasks.optimization``): in-graph tokens equal the host
text over random rollouts with mixed action texts (feedback a and n); the reference's rules
through text actions (hit, F1 stop reward and its fix, F2 stop words anywhere and its flag,
F6 ``.5``); the hp/hn sentence of each coordinate on a hand-picked point (F5 included); the instruction
pinned by default (F4) and drawn with the flag; the gymnasium string API.

Compiles dominate: one jitted reset + scan and one host decode per feedback type, built in
one test; the scripted rule checks ride in the first rows of the ``a`` rollout.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym
from jaxlm_gym.tasks import optimization as T
from jaxlm_gym.text import get_tokenizer
from pure_envs import optimization as opt

ID = "llf-optimization-Booth-v0"
N, STEPS, WIDTH = 64, 20, 32
NUM = r"-?\d+\.?\d*(?:e[-+]?\d+)?"
PAIR = re.compile(rf"\[({NUM}),\s*({NUM})\]")

INSTRUCTION_0 = ("Find the minimum of the Booth function f(x1, x2), where x1 and x2 both lie in [-10, 10]. You have "
                 "10 attempts. Each time, propose a point written as x = [x1, x2], or say stop once you believe you "
                 "are at the minimum.")
ASK = ". Which x do you try next? Answer as x = [x1, x2]."

# Scripted rows of the "a" rollout (the rest of each row, and every other row, is random).
SCRIPT = {
    0: ["x = [1, 3]"],  # a hit
    1: ["x = [0, 0]", "stop"],  # stop at a bad point: +f(prev_x) (F1)
    2: ["x = [.5, 1]"],  # F6: '.5' does not parse -> invalid
    3: ["x = [+1, 3]"],  # F6: '+1' neither
    4: ["x = [1, 3] to reach the min"],  # F2: a stop word anywhere wins over the point
    5: ["Let me stay at x = [2, 2]"],  # F2
    6: ["x = [0, 0]", "x = [2, 0]"],  # hand-picked hp/hn point (and F5 on x2)
    7: ["x = [50, -300]"],  # outside the domain: accepted (F6)
    8: ["I pick x=[1e1,-2.5e0] now"],  # exponent form, no spaces
}


def _reference_action(text: str):
    """The reference's parse (spec 2.3): stop words first as substrings, then the regex."""
    if any(w in text for w in ("reach", "stay", "stop")):
        return opt.STOP, None
    m = PAIR.search(text)
    if m is None:
        return opt.INVALID, None
    return opt.PROPOSE, (float(m.group(1)), float(m.group(2)))


def _random_text(rng: np.random.Generator) -> str:
    def num(lo, hi):
        v = rng.uniform(lo, hi)
        return f"{v:.{rng.integers(0, 4)}f}"

    kind = rng.random()
    if kind < 0.35:
        a, b = num(-10, 10), num(-10, 10)
        return str(rng.choice([f"x = [{a}, {b}]", f"[{a},{b}]", f"x=[{a},  {b}]", f"I choose x = [{a}, {b}]."]))
    if kind < 0.5:
        a, b = num(-500, 500), num(-500, 500)
        return str(rng.choice([f"x = [{a}, {b}]", "x = [1e3, -2e1]", f"x = [{a}e2, 0]"]))
    if kind < 0.55:
        return str(rng.choice(["x = [1, 3]", "x = [1.0, 3.00]"]))
    if kind < 0.72:
        return str(rng.choice(["stop", "I will stay here", "We reached it.", "x = [1, 2] to reach the min",
                               "unstoppable"]))
    return str(rng.choice([".5", "x = [.5, 1]", "x = [+1, 2]", "hello", "x = [1 2]", "", "[]", "x = [1, 2",
                           "Stop now", "x = (1, 2)", "x = [-, 3]", "qwerty [9,"]))


def _texts(seed: int, scripted: bool) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    texts = [[_random_text(rng) for _ in range(N)] for _ in range(STEPS)]
    if scripted:
        for row, seq in SCRIPT.items():
            for t, text in enumerate(seq):
                texts[t][row] = text
    return texts


def _run(feedback_type, seed, scripted=False, **config):
    vec = jaxlm_gym.make_vec(ID, N, obs_mode="tokens", action_mode="tokens", feedback_type=feedback_type, **config)
    texts = _texts(seed, scripted)
    actions = jnp.asarray(np.stack([[vec.encode_action(t, WIDTH) for t in row] for row in texts]))

    @jax.jit
    def rollout(key, actions):
        def body(state, xs):
            k, a = xs
            obs, state, r, te, tr, info = vec.step(k, state, a)
            info = {k: v for k, v in info.items() if k != "final_observation"}
            return state, (obs, r, info)

        k0, k1 = jax.random.split(key)
        obs0, state = vec.reset(k0)
        _, (obs, r, info) = jax.lax.scan(body, state, (jax.random.split(k1, STEPS), actions))
        return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), obs0, obs), r, info

    obs, r, info = jax.device_get(rollout(jax.random.key(seed), actions))
    flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), obs["facts"])
    host = np.asarray(vec.text.host_batch(flat), dtype=object).reshape(STEPS + 1, N)
    # The same facts with every paraphrase pinned to wording 0 (same shapes: no new compile).
    pinned = dict(flat)
    for k in vec.text.pools:
        if k not in vec.text.choices:
            pinned[k] = np.zeros_like(flat[k])
    host0 = np.asarray(vec.text.host_batch(pinned), dtype=object).reshape(STEPS + 1, N)
    return {"vec": vec, "texts": texts, "obs": obs, "r": r, "info": info, "host": host, "host0": host0}


def _check_tokens(run):
    tok = run["vec"].tokenizer
    host, obs = run["host"], run["obs"]
    want = tok.encode_batch(list(host.ravel()))
    toks = obs["tokens"].reshape(-1, obs["tokens"].shape[-1])
    lens = obs["length"].ravel()
    for i, ids in enumerate(want):
        assert toks[i, : lens[i]].tolist() == ids, host.ravel()[i]


def _check_parse(run):
    kind, x = run["info"]["action"]["kind"], run["info"]["action"]["x"]
    for t in range(STEPS):
        for i in range(N):
            want, pair = _reference_action(run["texts"][t][i])
            assert kind[t, i] == want, run["texts"][t][i]
            if pair is not None:
                np.testing.assert_array_equal(x[t, i], np.float32(pair))
    invalid = kind == opt.INVALID
    assert invalid.any() and (kind == opt.STOP).any() and (kind == opt.PROPOSE).any()
    np.testing.assert_allclose(run["r"][invalid], -0.01)
    assert not run["info"]["valid_action"][invalid].any()


def _check_rules_through_text_actions(run_a):
    r, info, obs, host0 = run_a["r"], run_a["info"], run_a["obs"], run_a["host0"]
    facts = obs["facts"]
    # "x = [1, 3]" on Booth is a hit: reward -min_y / 100 = 0, success.
    assert r[0, 0] == 0.0 and info["success"][0, 0]
    assert host0[1, 0] == "You proposed x = [1.00, 3.00] and reached the minimum.\nNow f(x) = 0.0000. This is the minimum of f."
    # F1: a stop earns +f(prev_x) / 100; f(0, 0) = 74 on Booth.
    np.testing.assert_allclose(r[1, 1], 0.74, rtol=1e-6)
    assert not info["success"][1, 1]
    assert host0[2, 1] == "You stopped at x = [0.00, 0.00], which is not the minimum.\n"
    # F6: '.5' and '+1' are invalid text: -0.01, the invalid fp and the self-contradictory fn (F7).
    for row in (2, 3):
        assert r[0, row] == np.float32(-0.01) and not info["valid_action"][0, row]
        assert host0[1, row] == ("Your answer is not a valid action. Give a valid action: x = [x1, x2] with both "
                                 "numbers between -10 and 10. Avoid a valid action that lies outside (-10, 10).\n")
    # F2: a stop word anywhere makes a stop, at x0: reward +f(x0) / 100.
    for row in (4, 5):
        assert info["action"]["kind"][0, row] == opt.STOP and facts["stopped"][1, row] == 1
        np.testing.assert_allclose(r[0, row], facts["y"][0, row] / 100, rtol=1e-5)
    # F6: the domain is not enforced; the exponent form parses.
    assert info["action"]["kind"][0, 7] == opt.PROPOSE and facts["obs_kind"][1, 7] == opt.OBS_STEP
    np.testing.assert_array_equal(info["action"]["x"][0, 8], [10.0, -2.5])


def _check_hindsight_sentence_per_coordinate(run_a):
    """From prev_x = (0, 0), grad f = (-34, -38): moving x1 up lowers f (hp); x2 unchanged is
    called "decreasing" (F5) and gets hn. At x = (2, 0), grad f = (-14, -22): larger x1, x2."""
    f = {k: v[2, 6] for k, v in run_a["obs"]["facts"].items()}
    assert (f["fb_hp_0"], f["fb_hp_1"], f["fb_hn_0"], f["fb_hn_1"]) == (opt.INCREASING, 0, 0, opt.DECREASING)
    assert (f["fb_fp_0"], f["fb_fp_1"], f["fb_fn_0"], f["fb_fn_1"]) == (opt.LARGER,) * 2 + (opt.SMALLER,) * 2
    assert run_a["host0"][2, 6] == (
        "You proposed x = [2.00, 0.00]. The minimum is not reached yet. "
        "You set x1 to 2.00. Increasing x1 from 0.00 is a direction in which f goes down. "
        "You set x2 to 0.00. Decreasing x2 from 0.00 does not make f go down. "
        "Try a larger x1 than 2.00. Try a larger x2 than 0.00. "
        "Do not try a smaller x1 than 2.00. Do not try a smaller x2 than 0.00.\n"
        "Now f(x) = 26.0000. Attempts left: 9" + ASK)
    # Drawn wordings: each sentence is one of its pool's, drawn on its own.
    text = run_a["host"][2, 6]
    assert "x1" in text and "0.00" in text and text.endswith("Attempts left: 9" + ASK)


def _check_instruction_pinned_by_default_and_drawn_with_the_flag(run_a, run_n):
    for text in run_a["host"][0]:
        assert text.startswith(INSTRUCTION_0 + "\nYou start at x = [")
        assert text.endswith("Attempts left: 10" + ASK)
    wordings = {a + " 10" + b for a, b in T._instructions("Booth", "[-10, 10]")}
    seen = {text.split("\n")[0] for text in run_n["host"][0]}
    assert seen <= wordings and len(seen) >= 3
    # 'n': no feedback, only the observation (empty after a stop or invalid text).
    for t in range(1, STEPS + 1):
        for i, text in enumerate(run_n["host"][t]):
            assert text == "" or text.startswith("Now f(x) ="), text


def _check_fix_stop_reward_through_text(run_a):
    """The parsed "stop" of row 1 stepped by a core with the F1 fix: it earns what proposing
    prev_x again would, -f(0, 0) / 100."""
    env = opt.Optimization("Booth", fix_stop_reward=True)
    action = jax.tree.map(lambda v: jnp.asarray(v[1, 1]), run_a["info"]["action"])
    assert int(action["kind"]) == opt.STOP
    state = opt.OptimizationState(time=jnp.int32(1), prev_x=jnp.zeros(2), attempts=jnp.int32(9), x0=jnp.zeros(2))
    _, _, reward, _, info = env.step_env(jax.random.key(0), state, action, env.default_params)
    np.testing.assert_allclose(reward, -0.74, rtol=1e-6)
    assert not info["success"]


def test_rollouts_a_and_n():
    """Two compiled rollouts, checked in one test so that each is built once under
    ``pytest -n``: feedback ``a`` with the scripted rows, and feedback ``n`` with
    ``paraphrase_instruction=True`` (the mixture ``m`` is covered on gridworld and the toy
    task: its sentences are the ``a`` ones)."""
    run_a = _run("a", 0, scripted=True)
    run_n = _run("n", 2, paraphrase_instruction=True)
    for run in (run_a, run_n):
        _check_tokens(run)
        _check_parse(run)
    _check_rules_through_text_actions(run_a)
    _check_hindsight_sentence_per_coordinate(run_a)
    _check_instruction_pinned_by_default_and_drawn_with_the_flag(run_a, run_n)
    _check_fix_stop_reward_through_text(run_a)
    with pytest.raises(ValueError, match="paraphrase_instruction"):
        opt.Optimization("Booth", paraphrase_instruction="yes")


def test_parser_and_struct_actions():
    vec = jaxlm_gym.make_vec(ID, 2, obs_mode="symbolic", action_mode="index")
    struct = opt.OptimizationAction(x=jnp.zeros((2, 2)), kind=jnp.asarray([0, 1], jnp.int32))
    out = vec._action_index(struct)  # index mode takes the core's struct as well as a dict
    assert set(out) == {"x", "kind"} and out["x"].dtype == jnp.float32
    parser = T.optimization_parser(get_tokenizer(None))
    assert parser.max_tokens == parser.width and parser.encode("stop", 8).shape == (8,)
    assert T.ACTIONS[2] == "stop" and len(T.ACTIONS) >= 4


def test_gym_string_api():
    from gymnasium.utils.env_checker import check_env

    from jaxlm_gym import gym as llf_gym

    env = llf_gym.make(ID)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=5)
    assert obs["instruction"] == INSTRUCTION_0 and obs["feedback"] == "" and info["success"] is False
    x0 = [float(v) for v in PAIR.search(obs["observation"]).groups()]
    obs, r, te, tr, info = env.step("x = [1, 3]")
    assert r == 0.0 and info["success"] and not te and not tr
    assert obs["observation"] == "Now f(x) = 0.0000. This is the minimum of f." and obs["instruction"] == ""
    assert "minimum" in obs["feedback"] and "[1.00, 3.00]" in obs["feedback"]
    # A hit does not move prev_x: stopping now stops at x0 (F1: +f(x0) / 100).
    obs, r, *_ = env.step("stop")
    fx0 = (x0[0] + 2 * x0[1] - 7) ** 2 + (2 * x0[0] + x0[1] - 5) ** 2
    assert obs["observation"] == "" and r == pytest.approx(fx0 / 100, rel=1e-4)


def test_stop_words_anywhere_flag():
    """F2 off (``stop_words_anywhere=False``): a point in the text wins over a stop word; a
    stop word still stops a text with no point."""
    vec = jaxlm_gym.make_vec(ID, 2, obs_mode="symbolic", action_mode="tokens", stop_words_anywhere=False)
    assert vec.parser.stop_first is False
    assert jaxlm_gym.make_vec(ID, 2, obs_mode="symbolic", action_mode="tokens").parser.stop_first is True
    texts = ["x = [1, 2] to reach the min", "Let me stay at x = [2, 2]", "stop", "I will stay here",
             "x = [.5, 1]", "x = [3, -4]"]
    tokens = jnp.asarray(np.stack([vec.encode_action(t, WIDTH) for t in texts]))
    out = jax.jit(vec.parser.parse_batch)(tokens)
    assert out["kind"].tolist() == [opt.PROPOSE, opt.PROPOSE, opt.STOP, opt.STOP, opt.INVALID, opt.PROPOSE]
    np.testing.assert_array_equal(out["x"][:2], [[1, 2], [2, 2]])
    with_f2 = jax.jit(T.optimization_parser(vec.tokenizer).parse_batch)(tokens)
    assert with_f2["kind"].tolist() == [opt.STOP, opt.STOP, opt.STOP, opt.STOP, opt.INVALID, opt.PROPOSE]

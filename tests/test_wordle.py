"""Wordle: feedback rules, rewards, limits, renderings, consistent-set sizes and the
in-graph guess parser, checked against plain-Python code written from the spec
(lmrl-gym.md section 4)."""

from __future__ import annotations

import pathlib
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym
from jaxlm_gym.tasks.wordle import GuessParser, official_lists
from jaxlm_gym.text import gpt2
from pure_envs import wordle

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "lmrl-gym"
if not DATA.is_dir():
    DATA = pathlib.Path("/work/shared/data/lmrl-gym")
BENCH = DATA / "wordle_official_400.txt"
needs_data = pytest.mark.skipif(not BENCH.is_file(), reason="reference word lists not available")


def _bench_words():
    return [w.strip() for w in open(BENCH) if len(w.strip()) == 5]


# ---------------------------------------------------------------------------
# Plain-Python Wordle from the spec.

def ref_marks(guess: str, target: str, official: bool = False) -> str:
    if not official:
        return " ".join("g" if g == t else "y" if g in target else "b" for g, t in zip(guess, target))
    rest = [t for g, t in zip(guess, target) if g != t]
    out = []
    for g, t in zip(guess, target):
        if g == t:
            out.append("g")
        elif g in rest:
            rest.remove(g)
            out.append("y")
        else:
            out.append("b")
    return " ".join(out)


POSSIBLE, HERE, NOT_HERE = 1, 2, 0


class RefKnowledge:
    """The reference's per-letter knowledge vectors and its word filter (game.py)."""

    def __init__(self):
        self.k = {c: [POSSIBLE] * 5 for c in "abcdefghijklmnopqrstuvwxyz"}

    def update(self, guess: str, target: str):
        for i, c in enumerate(guess):
            if c == target[i]:
                self.k[c][i] = HERE
            elif c in target:
                self.k[c][i] = NOT_HERE
            else:
                self.k[c] = [NOT_HERE] * 5

    def satisfies(self, word: str) -> bool:
        for c, kn in self.k.items():
            if all(x == POSSIBLE for x in kn):
                continue
            if all(x == NOT_HERE for x in kn):
                if c in word:
                    return False
                continue
            for i in range(5):
                if kn[i] == HERE and word[i] != c:
                    return False
                if kn[i] == NOT_HERE and word[i] == c:
                    return False
            if c not in word:
                return False
        return True


def ref_text(actions, target, vocab, official=False):
    """The ReformatWordleEnvironment history after ``actions`` (reference parsing)."""
    text = "Wordle:\n"
    for a in actions:
        w = a.strip().replace(" ", "")
        valid = len(w) == 5 and all("a" <= c <= "z" for c in w) and w in vocab
        text += " ".join(w) + "\n" + ((ref_marks(w, target, official) + "\n") if valid else "\n")
    return text


# ---------------------------------------------------------------------------

SMALL = ["speed", "abide", "eerie", "there", "abcde", "abcdf", "slate", "crane"]


@pytest.mark.parametrize("official", [False, True])
def test_feedback_examples(official):
    env = wordle.Wordle(SMALL, official_feedback=official)
    letters = lambda w: jnp.asarray([ord(c) - 97 for c in w], jnp.int32)  # noqa: E731
    show = lambda m: " ".join("byg"[int(x)] for x in m)  # noqa: E731
    got = {(g, t): show(env.feedback(letters(g), letters(t))) for g, t in [("speed", "abide"), ("eerie", "there")]}
    if official:
        assert got == {("speed", "abide"): "b b y b y", ("eerie", "there"): "y b y b g"}
    else:
        assert got == {("speed", "abide"): "b b y y y", ("eerie", "there"): "y y y b g"}
    rng = random.Random(0)
    for _ in range(200):
        g = "".join(rng.choice("abcde") for _ in range(5))
        t = "".join(rng.choice("abcde") for _ in range(5))
        assert show(env.feedback(letters(g), letters(t))) == ref_marks(g, t, official)


class Driver:
    """One env of a tokens-in/tokens-out VecEnv with a chosen hidden word."""

    def __init__(self, target: str, **config):
        self.vec = jaxlm_gym.make_vec("wordle", 1, obs_mode="both", action_mode="tokens", **config)
        self._step = jax.jit(self.vec.step)
        self.obs, state = jax.jit(self.vec.reset)(jax.random.key(0))
        # The state of a token-observing Wordle VecEnv is an AppendState: the core's state
        # and the text rendered so far.
        target = jnp.asarray([self.vec.env.answers.index(target)], jnp.int32)
        self.state = state.replace(core=self.vec.core_state(state).replace(target=target))
        self.t = 0

    def step(self, text):
        self.t += 1
        tokens = jnp.asarray(self.vec.encode_actions([text], width=16))
        self.obs, self.state, r, te, tr, info = self._step(jax.random.key(self.t), self.state, tokens)
        final = info["final_observation"]
        ids = np.asarray(final["tokens"][0][: int(final["length"][0])]).tolist()
        text = self.vec.decode(final)[0]
        assert ids == self.vec.tokenizer.encode(text)
        return text, float(r[0]), bool(te[0]), bool(tr[0]), info


@needs_data
def test_full_episode_rendering_and_rewards():
    words = _bench_words()
    d = Driver("abide", word_list=str(BENCH))
    assert d.vec.decode(d.obs) == ["Wordle:\n"]
    assert np.asarray(d.obs["tokens"][0][:4]).tolist() == [26449, 293, 25, 198]
    plays = ["xyzzy\n", "s l a t e\n", "abc\n", "  w h e r e \n", "SLATE\n"]
    for k, a in enumerate(plays):
        text, r, te, tr, info = d.step(a)
        shown = [p if p != "SLATE\n" else "" for p in plays[: k + 1]]  # not a-z: written empty
        assert text == ref_text(shown, "abide", words), (k, text)
        assert r == -1.0 and not te and not tr
        assert bool(info["valid_action"][0]) == (a.strip().replace(" ", "") in words)
    assert text == ("Wordle:\nx y z z y\n\ns l a t e\nb b y b g\na b c\n\n"
                    "w h e r e\nb b y b g\n\n\n")
    text, r, te, tr, info = d.step("abide\n")
    assert text.endswith("\n\n\na b i d e\ng g g g g\n") and r == 0.0 and te and not tr
    assert int(info["consistent"][0]) == 1
    assert d.vec.decode(d.obs) == ["Wordle:\n"]  # auto-reset


@needs_data
@pytest.mark.parametrize("k", [1, 3, 6])
def test_solving_on_guess_k_returns_minus_k_plus_1(k):
    words = _bench_words()
    env = wordle.Wordle(str(BENCH))
    params = env.default_params
    target = words[7]
    others = [w for w in words if w != target][: k - 1]
    _, state = env.reset(jax.random.key(0), params)
    state = state.replace(target=jnp.int32(7))
    step = jax.jit(env.step)
    total = 0.0
    for i, w in enumerate(others + [target]):
        _, state, r, te, tr, info = step(jax.random.key(i), state, jnp.int32(env.guesses.index(w)), params)
        total += float(r)
        assert bool(te) == (w == target) and not bool(tr)
    assert total == -(k - 1)


def test_one_consistent_word_left_but_not_guessed_is_not_solved():
    env = wordle.Wordle(["abcde", "abcdf", "slate"])
    params = env.default_params
    _, state = env.reset(jax.random.key(0), params)
    state = state.replace(target=jnp.int32(0))  # abcde
    _, state, r, te, _, info = env.step(jax.random.key(1), state, jnp.int32(env.guesses.index("abcdf")), params)
    assert int(info["consistent"]) == 1 and float(r) == -1.0 and not bool(te)
    _, state, r, te, _, info = env.step(jax.random.key(2), state, jnp.int32(env.guesses.index("abcde")), params)
    assert float(r) == 0.0 and bool(te)


@pytest.mark.parametrize("bad", [-1.0, -10.0])
def test_invalid_guesses_cost_a_try_and_six_tries_end_the_game(bad):
    env = wordle.Wordle(SMALL)
    params = env.default_params.replace(bad_word_reward=bad)
    _, state = env.reset(jax.random.key(0), params)
    n = env.num_actions
    invalid = [n, n + 1 + wordle.pack("xyzzy"), n + 1 + wordle.pack("ab"), -5, 10**9]
    for t, a in enumerate(invalid):
        obs, state, r, te, info = env.step_env(jax.random.key(t), state, jnp.int32(a), params)
        tr = env.is_truncated(state, params)
        assert float(r) == bad and not bool(te) and not bool(tr) and not bool(info["valid_action"])
        assert int(state.time) == t + 1 and int(info["consistent"]) == len(SMALL)
    target = env.answers[int(state.target)]
    other = next(w for w in env.guesses if w != target)
    obs, state, r, te, info = env.step_env(jax.random.key(9), state, jnp.int32(env.guesses.index(other)), params)
    tr = env.is_truncated(state, params)
    assert float(r) == -1.0 and bool(te) and not bool(tr)  # the 6th try ends the game
    assert int(obs["symbolic"]["turn"]) == 6
    sym = obs["symbolic"]
    assert np.asarray(sym["marks"])[:5].tolist() == [[3] * 5] * 5
    assert np.asarray(sym["letters"])[1].tolist() == [23, 24, 25, 25, 24]
    assert np.asarray(sym["letters"])[2].tolist() == [0, 1, 26, 26, 26]
    assert np.asarray(sym["letters"])[0].tolist() == [26] * 5


def test_short_time_limit_truncates():
    env = wordle.Wordle(SMALL)
    params = env.default_params.replace(max_steps_in_episode=2)
    _, state = env.reset(jax.random.key(0), params)
    for t in range(2):
        _, state, _, te, tr, _ = env.step(jax.random.key(t), state, jnp.int32(env.num_actions), params)
    assert bool(tr) and not bool(te) and int(state.time) == 0


@needs_data
@pytest.mark.parametrize("official", [False, True])
def test_consistent_count_equals_brute_force(official):
    answers = [w.strip() for w in open(DATA / "wordle_official.txt") if len(w.strip()) == 5]
    env = wordle.Wordle(answers, official_feedback=official)
    params = env.default_params
    n_env, steps = 8, 5
    rng = np.random.default_rng(1 + official)
    guesses = rng.integers(0, env.num_actions, (steps, n_env))
    _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(5), n_env), params)
    step = jax.jit(jax.vmap(env.step_env, in_axes=(None, 0, 0, None)))
    targets = [env.answers[int(i)] for i in state.target]
    know = [RefKnowledge() for _ in range(n_env)]
    history = [[] for _ in range(n_env)]
    for t in range(steps):
        _, state, r, te, info = step(jax.random.key(t), state, jnp.asarray(guesses[t], jnp.int32), params)
        for i in range(n_env):
            g = env.guesses[int(guesses[t, i])]
            history[i].append(g)
            if official:
                want = sum(all(ref_marks(h, w, True) == ref_marks(h, targets[i], True) for h in history[i])
                           for w in answers)
            else:
                know[i].update(g, targets[i])
                want = sum(know[i].satisfies(w) for w in answers)
            assert int(info["consistent"][i]) == want, (official, targets[i], history[i])


@needs_data
def test_hidden_word_is_uniform_over_the_list():
    env = wordle.Wordle(str(BENCH))
    n = 431 * 60
    _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(jax.random.split(jax.random.key(0), n),
                                                                 env.default_params)
    counts = np.bincount(np.asarray(state.target), minlength=431)
    assert len(env.answers) == 431 and counts.shape == (431,)
    chi2 = float(((counts - 60) ** 2 / 60).sum())
    assert counts.min() > 0 and chi2 < 600  # df = 430: mean 430, sd ~ 29


@pytest.fixture(scope="module")
def official_parser():
    answers, guesses = official_lists()
    env = wordle.Wordle(answers, guesses)
    return env, GuessParser(env, gpt2())


def test_official_lists(official_parser):
    env, _ = official_parser
    assert len(env.answers) == 2315 and len(env.guesses) == 12972
    if (DATA / "wordle_official_guess.txt").is_file():
        read = lambda f: {w.strip() for w in open(DATA / f) if len(w.strip()) == 5}  # noqa: E731
        assert set(env.answers) == read("wordle_official.txt")
        assert set(env.guesses) == read("wordle_official_guess.txt")
    assert list(env.guesses) == sorted(env.guesses) and np.all(np.diff(env.guess_codes) > 0)


def test_membership_of_every_word_and_non_words(official_parser):
    env, p = official_parser
    n = len(env.guesses)
    table = jnp.asarray(p.table())  # canonical "s l a t e\n": the fast path
    assert p.table().shape == (n, 6)
    assert np.array_equal(np.asarray(jax.jit(p.parse_batch)(table)), np.arange(n))
    plain = np.stack([p.encode(w, 6) for w in env.guesses])  # "slate": the byte-level path
    assert np.array_equal(np.asarray(jax.jit(jax.vmap(p.parse))(jnp.asarray(plain))), np.arange(n))
    rng = random.Random(0)
    words = set(env.guesses)
    fakes = []
    while len(fakes) < 200:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
        if w not in words:
            fakes.append(w)
    got = np.asarray(jax.jit(p.parse_batch)(jnp.asarray(np.stack([p.encode(" ".join(w) + "\n", 8) for w in fakes]))))
    assert got.tolist() == [n + 1 + wordle.pack(w) for w in fakes]
    assert [env.action_of(w) for w in fakes[:5]] == got[:5].tolist()


def test_text_actions_parse_like_the_reference(official_parser):
    env, p = official_parser
    tok = p.tokenizer
    n = len(env.guesses)
    slate = env.guesses.index("slate")
    cases = {
        "s l a t e\n": slate, "slate\n": slate, "slate": slate, "  s l a t e  \n": slate, "\tsl ate\n\n": slate,
        "s l a t e": slate, "SLATE\n": n, "s l a t e s\n": n, "": n, "\n": n, "s\tlate\n": n,
        "sl\nate\n": n, "slat\n": n + 1 + wordle.pack("slat"), "xyzzy\n": n + 1 + wordle.pack("xyzzy"),
        "s1ate\n": n, "slaté\n": n, " " * 70 + "slate\n": n,
    }
    width = max(len(tok.encode(t)) for t in cases) + 2
    got = np.asarray(jax.jit(p.parse_batch)(jnp.asarray(np.stack([p.encode(t, width) for t in cases]))))
    assert dict(zip(cases, got.tolist())) == cases
    # Non-canonical token splits of the same text.
    ids = {c: tok.encode(c)[0] for c in ["s", " l", " a", " t", " e", "\n", "sl", "ate", " s", "at", "e"]}
    splits = [["s", " l", " a", " t", " e", "\n"], ["sl", "ate", "\n"], [" s", " l", " a", " t", " e"],
              ["sl", "at", "e", "\n"], ["s", " l", " a", " t", " e", "\n", "\n"]]
    buf = np.full((len(splits), 8), tok.pad_id, np.int32)
    for i, s in enumerate(splits):
        buf[i, : len(s)] = [ids[x] for x in s]
    assert np.asarray(jax.jit(p.parse_batch)(jnp.asarray(buf))).tolist() == [slate] * len(splits)
    # With a short width the table uses shorter spellings that still parse to the same word.
    small = p.table(4)
    sample = np.arange(0, n, 97)
    assert np.asarray(jax.jit(p.parse_batch)(jnp.asarray(small[sample]))).tolist() == sample.tolist()

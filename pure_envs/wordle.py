"""LMRL-Gym Wordle, as a pure JAX core.

Facts follow LMRL-Gym (``llm_rl_scripts/wordle/env/{game.py,env.py}``): five-letter words
from one list (answers = guesses in the reference), six tries, feedback per position
``g`` (same letter here), ``y`` (the letter occurs anywhere in the hidden word; letters
are *not* counted, reference defect L3) or ``b``; -1 per guess, 0 on the solving guess,
an invalid guess (not five letters a-z, or not in the guess list) costs a try and
``bad_word_reward`` (-1) and leaves the knowledge unchanged.

**Hidden word.** The reference keeps no fixed target: on each valid guess it draws a
target uniformly from the words still consistent with the feedback so far, and scores
the guess against it ("lazy posterior sampling"). Drawing one hidden word uniformly at
reset and scoring every guess against it gives the same distribution of feedback
sequences: with ``C_0`` the list and ``C_k`` the words consistent with the first ``k``
feedbacks, the reference produces feedback ``f_k`` with probability
``|C_k| / |C_{k-1}|`` (the share of ``C_{k-1}`` that answers ``f_k``), so a whole sequence
has probability ``prod_k |C_k| / |C_{k-1}| = |C_n| / |C_0|``, the probability that a
uniform hidden word answers all ``n`` guesses that way. This holds for any policy that
chooses guesses from the history (chain rule), so returns and lengths agree in
distribution; only the RNG streams differ.

**Solved.** As the reference: a valid guess scores 0 iff the consistent set is exactly one
word and that word has been guessed. The hidden word is always consistent, so this is
"one consistent word left, and the hidden word is among the valid guesses so far".

**Consistent set.** A packed ``uint32`` bitset over the answer list, updated in-graph
after each valid guess by AND-ing ten precomputed masks (five per-position masks "letter
c is / is not at i" and five letter-count masks); its popcount is the consistent-set
size. The reference re-filters the whole list against 26 letter states instead (L4).

Nothing here builds strings: the text layer (``jaxlm_gym.tasks.wordle``) renders the
facts and parses action text into the action indices below.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from .base import TextEnv

N_CHARS = 5
ALPHA = 26
NO_LETTER = 26  # letter grid value of an empty cell
B, Y, G, NO_MARK = 0, 1, 2, 3  # marks; NO_MARK for rows without feedback
# Row kinds (state ``kind`` and the ``row_kind`` fact).
UNPLAYED, VALID, INVALID_LETTERS, INVALID_EMPTY = 0, 1, 2, 3
#: Letters are packed base 27, first letter most significant, digit 0 = "no letter":
#: "slate" = 19*27^4 + 12*27^3 + 1*27^2 + 20*27 + 5. Numeric order = word order.
BASE = 27
CODE_LIMIT = BASE**N_CHARS
POW27 = np.asarray([BASE ** (N_CHARS - 1 - i) for i in range(N_CHARS)], np.int32)
POW3 = np.asarray([3 ** (N_CHARS - 1 - i) for i in range(N_CHARS)], np.int32)


def pack(word: str) -> int:
    """Host: the base-27 code of 1..5 lowercase letters (see ``BASE``)."""
    if not 1 <= len(word) <= N_CHARS or not all("a" <= c <= "z" for c in word):
        raise ValueError(f"cannot pack {word!r}: 1 to {N_CHARS} letters a-z")
    return sum((ord(c) - 96) * int(POW27[i]) for i, c in enumerate(word))


def unpack(code: int) -> str:
    """Host: the letters of a base-27 code."""
    return "".join(chr(96 + (int(code) // int(p)) % BASE) for p in POW27 if (int(code) // int(p)) % BASE)


def read_words(source) -> list[str]:
    """The reference's loader: stripped lines (or items) of length 5, first copy kept.

    ``source``: a path (``str`` or path-like) to a file with one word a line, or a
    sequence of words.
    """
    if isinstance(source, str) or hasattr(source, "__fspath__"):
        with open(source, encoding="utf-8") as f:
            items = f.read().splitlines()
    else:
        items = list(source)
    words = [str(w).strip() for w in items]
    words = list(dict.fromkeys(w for w in words if len(w) == N_CHARS))
    bad = [w for w in words if not all("a" <= c <= "z" for c in w)]
    if bad:
        raise ValueError(f"word list has words that are not 5 letters a-z (the reference could never accept "
                         f"them as guesses): {bad[:5]}")
    if not words:
        raise ValueError(f"word list {source!r} has no 5-letter words")
    return words


def reference_marks(guess: np.ndarray, target: np.ndarray, official: bool) -> np.ndarray:
    """Host/numpy twin of the in-graph feedback (letters as ints), for helpers and tests."""
    guess, target = np.asarray(guess), np.asarray(target)
    green = guess == target
    if not official:
        anywhere = (guess[:, None] == target[None, :]).any(1)
        return np.where(green, G, np.where(anywhere, Y, B)).astype(np.int32)
    rest = [int(t) for t, gr in zip(target, green) if not gr]
    out = []
    for g, gr in zip(guess, green):
        if gr:
            out.append(G)
        elif int(g) in rest:
            rest.remove(int(g))
            out.append(Y)
        else:
            out.append(B)
    return np.asarray(out, np.int32)


@struct.dataclass
class WordleState(environment.EnvState):
    """``time`` int32 (tries used), ``target`` int32 (hidden word: index into
    ``env.answers``), per row (one per try, int32[T]): ``kind`` (0 unplayed, 1 valid,
    2 invalid with letters, 3 invalid shown empty), ``code`` (base-27 letters),
    ``word`` (index into ``env.guesses`` for valid rows); ``marks`` int32[T, 5];
    ``consistent`` uint32[ceil(A / 32)] (bitset over the answers), ``count`` int32 (its
    popcount), ``solved`` bool."""

    target: jax.Array
    kind: jax.Array
    code: jax.Array
    word: jax.Array
    marks: jax.Array
    consistent: jax.Array
    count: jax.Array
    solved: jax.Array


@struct.dataclass
class WordleParams(environment.EnvParams):
    """Traced task parameters. ``bad_word_reward``: reward of an invalid guess (the
    reference's -1; its online filtered-BC scripts use -10). ``max_steps_in_episode``
    truncates earlier than the ``num_tries`` game rule when smaller."""

    max_steps_in_episode: int = 6
    bad_word_reward: float = -1.0
    reward_guess: float = -1.0
    reward_solved: float = 0.0


class Wordle(TextEnv):
    """LMRL-Gym Wordle: find the hidden five-letter word in six tries.

    Static config: ``word_list`` (answers: a path, one word a line, or a sequence of
    words; the reference keeps stripped lines of length 5), ``guess_list`` (accepted
    guesses; default: the word list, as the reference; the answers are always added),
    ``official_feedback`` (False: the reference's rule, ``y`` whenever the letter occurs
    anywhere in the hidden word (defect L3); True: official Wordle's letter counting),
    ``num_tries`` (6).

    ``env.guesses`` is the guess list sorted (base-27 code order = alphabetical),
    ``env.answers`` the answer list in file order.

    Observation (dict):
      symbolic: ``letters`` int32[T, 5] (0..25 = a..z, 26 empty), ``marks`` int32[T, 5]
        (0 b, 1 y, 2 g, 3 none: unplayed or invalid row), ``turn`` int32 (tries used),
        ``consistent`` int32 (consistent-set size).
      facts (for the text layer): int32[T] ``row_kind`` (0 nothing written, 1 valid,
        2 invalid with letters), ``row_run`` (newlines before the row, minus one),
        ``row_first`` (first letter 0..25), ``row_l1``..``row_l4`` (letters 2-5: 0 none,
        1..26 a..z), ``row_marks`` (marks base 3, first most significant); int32
        ``final_run`` (newlines at the end of the text).
    Action: int32 scalar: ``0..G-1`` guesses ``env.guesses[i]``; ``G`` (``invalid_action``)
      is text that is no word, shown as an empty action line; ``G + 1 + code`` (code the
      base-27 packing of 1..5 letters a-z that are *not* a listed guess) is an invalid
      guess shown with its letters. Any other value is treated as ``G``.
    Reward: float32; valid guess: 0 if solved else -1 (``reward_solved``/``reward_guess``);
      invalid: ``bad_word_reward``.
    Termination: terminated when solved or after ``num_tries`` tries (valid or invalid);
      truncated after ``max_steps_in_episode`` steps if not terminated.
    Info: ``valid_action`` bool, ``consistent`` int32 (consistent-set size), ``solved``.
    State: ``WordleState``.
    """

    step_needs_key = False  # the hidden word is fixed at reset
    constant_reset_facts = True  # every game starts from the empty board (the hidden word is not a fact)

    def __init__(self, word_list=None, guess_list=None, official_feedback: bool = False, num_tries: int = 6):
        super().__init__()
        if word_list is None:
            raise ValueError("Wordle needs word_list=: a path to a file with one 5-letter word a line, or a "
                             "sequence of words (jaxlm_gym.make('wordle') supplies the official lists)")
        if int(num_tries) < 1:
            raise ValueError(f"num_tries must be >= 1, got {num_tries}")
        self.num_tries = int(num_tries)
        self.official_feedback = bool(official_feedback)
        self.answers = tuple(read_words(word_list))
        guesses = read_words(guess_list) if guess_list is not None else []
        self.guesses = tuple(sorted(set(guesses) | set(self.answers)))
        self.guess_codes = np.asarray([pack(w) for w in self.guesses], np.int32)
        index = {w: i for i, w in enumerate(self.guesses)}
        self.answer_guess = np.asarray([index[w] for w in self.answers], np.int32)
        self.answer_letters = np.asarray([[ord(c) - 97 for c in w] for w in self.answers], np.int32)
        self.guess_letters = np.asarray([[ord(c) - 97 for c in w] for w in self.guesses], np.int32)
        self.max_run = 2 * self.num_tries + 1  # longest newline run of the rendering
        self._build_masks()
        t = self.num_tries
        self.fact_shapes = {"row_kind": (t,), "row_run": (t,), "row_first": (t,), "row_l1": (t,),
                            "row_l2": (t,), "row_l3": (t,), "row_l4": (t,), "row_marks": (t,), "final_run": ()}

    def _build_masks(self):
        """Bitsets over the answers: letter c at position i; count of c >= k and == k."""
        a = len(self.answers)
        self.words32 = -(-a // 32)

        def packbits(rows: np.ndarray) -> np.ndarray:  # bool[..., A] -> uint32[..., W]
            full = np.zeros(rows.shape[:-1] + (self.words32 * 32,), bool)
            full[..., :a] = rows
            b = full.reshape(rows.shape[:-1] + (self.words32, 32)).astype(np.uint64)
            return (b << np.arange(32, dtype=np.uint64)).sum(-1).astype(np.uint32)

        L = self.answer_letters  # [A, 5]
        at = L[None, :, :] == np.arange(ALPHA)[:, None, None]  # [26, A, 5]
        self.pos_masks = packbits(np.transpose(at, (2, 0, 1)))  # [5, 26, W]: letter c at i
        counts = at.sum(-1)  # [26, A]
        k = np.arange(N_CHARS + 1)
        self.count_ge = packbits(counts[:, None, :] >= k[None, :, None])  # [26, 6, W]
        self.count_eq = packbits(counts[:, None, :] == k[None, :, None])  # [26, 6, W]
        self.full_mask = packbits(np.ones((a,), bool))

    # ------------------------------------------------------------------ gymnax API
    @property
    def default_params(self) -> WordleParams:
        return WordleParams(max_steps_in_episode=self.num_tries)

    @property
    def name(self) -> str:
        return "wordle"

    @property
    def num_actions(self) -> int:
        return len(self.guesses)

    def action_space(self, params=None):
        return spaces.Discrete(len(self.guesses))

    def observation_space(self, params=None):
        t = self.num_tries
        sym = {"letters": spaces.Box(0, NO_LETTER, (t, N_CHARS), jnp.int32),
               "marks": spaces.Box(0, NO_MARK, (t, N_CHARS), jnp.int32),
               "turn": spaces.Discrete(t + 1),
               "consistent": spaces.Discrete(len(self.answers) + 1)}
        highs = {"row_kind": 2, "row_run": self.max_run - 1, "row_first": ALPHA - 1, "row_l1": ALPHA,
                 "row_l2": ALPHA, "row_l3": ALPHA, "row_l4": ALPHA, "row_marks": 3**N_CHARS - 1,
                 "final_run": self.max_run}
        facts = {k: spaces.Box(0, highs[k], shape, jnp.int32) for k, shape in self.fact_shapes.items()}
        return spaces.Dict({"symbolic": spaces.Dict(sym), "facts": spaces.Dict(facts)})

    def check_params(self, params: WordleParams) -> None:
        if int(params.max_steps_in_episode) < 1:
            raise ValueError(f"max_steps_in_episode must be >= 1, got {params.max_steps_in_episode}")

    def is_truncated(self, state: WordleState, params: WordleParams) -> jax.Array:
        ended = state.solved | (state.time >= self.num_tries)
        return (state.time >= params.max_steps_in_episode) & ~ended

    # ------------------------------------------------------------------ dynamics
    def reset_env(self, key: jax.Array, params: WordleParams):
        # One 32-bit draw modulo A (bias below A / 2^32) is a third of ``randint``'s cost.
        target = (jax.random.bits(key, (), jnp.uint32) % len(self.answers)).astype(jnp.int32)
        t = self.num_tries
        zeros = jnp.zeros((t,), jnp.int32)
        state = WordleState(time=jnp.int32(0), target=target, kind=zeros, code=zeros, word=zeros,
                            marks=jnp.full((t, N_CHARS), NO_MARK, jnp.int32),
                            consistent=jnp.asarray(self.full_mask), count=jnp.int32(len(self.answers)),
                            solved=jnp.bool_(False))
        return self.observe(key, state, None, params), state

    def feedback(self, guess: jax.Array, target: jax.Array) -> jax.Array:
        """int32[5] marks of ``guess`` (letters int32[5]) against ``target`` (letters)."""
        green = guess == target
        same = guess[:, None] == target[None, :]  # [i, j]: guess letter i is target letter j
        if not self.official_feedback:
            return jnp.where(green, G, jnp.where(jnp.any(same, axis=1), Y, B)).astype(jnp.int32)
        # Official: a non-green letter is yellow while the target's non-green copies of it
        # are not used up by earlier non-green copies in the guess.
        avail = jnp.sum(same & ~green[None, :], axis=1)  # non-green copies in the target
        gg = guess[:, None] == guess[None, :]
        earlier = jnp.tril(jnp.ones((N_CHARS, N_CHARS), bool), k=-1)
        used = jnp.sum(gg & earlier & ~green[None, :], axis=1)
        return jnp.where(green, G, jnp.where(used < avail, Y, B)).astype(jnp.int32)

    def _constraint(self, letters: jax.Array, marks: jax.Array) -> jax.Array:
        """uint32[W]: the answers that give ``marks`` to the guess ``letters``."""
        pos = jnp.asarray(self.pos_masks)[jnp.arange(N_CHARS), letters]  # [5, W]
        pos = jnp.where((marks == G)[:, None], pos, ~pos)
        if self.official_feedback:
            same = letters[:, None] == letters[None, :]
            k = jnp.sum(same & (marks != B)[None, :], axis=1)
            exact = jnp.any(same & (marks == B)[None, :], axis=1)
            table = jnp.where(exact[:, None], jnp.asarray(self.count_eq)[letters, k],
                              jnp.asarray(self.count_ge)[letters, k])
        else:
            has = jnp.asarray(self.count_ge)[letters, 1]  # [5, W]
            table = jnp.where((marks == B)[:, None], ~has, has)
        both = pos & table
        return both[0] & both[1] & both[2] & both[3] & both[4]

    def step_env(self, key: jax.Array, state: WordleState, action, params: WordleParams):
        a = jnp.asarray(action, jnp.int32)
        n = len(self.guesses)
        valid = (a >= 0) & (a < n)
        lettered = (a > n) & (a - n - 1 > 0) & (a - n - 1 < CODE_LIMIT)
        word = jnp.clip(a, 0, n - 1)
        code = jnp.where(valid, jnp.asarray(self.guess_codes)[word], jnp.where(lettered, a - n - 1, 0))
        letters = jnp.asarray(self.guess_letters)[word]
        target = jnp.asarray(self.answer_letters)[state.target]
        marks = self.feedback(letters, target)
        consistent = jnp.where(valid, state.consistent & self._constraint(letters, marks), state.consistent)
        count = jnp.sum(jax.lax.population_count(consistent)).astype(jnp.int32)
        row = jnp.clip(state.time, 0, self.num_tries - 1)
        kind = jnp.where(valid, VALID, jnp.where(lettered, INVALID_LETTERS, INVALID_EMPTY))
        rows_kind = state.kind.at[row].set(kind)
        rows_word = state.word.at[row].set(jnp.where(valid, word, 0))
        hidden = jnp.asarray(self.answer_guess)[state.target]
        guessed = jnp.any((rows_kind == VALID) & (rows_word == hidden))
        solved = valid & (count == 1) & guessed
        reward = jnp.where(valid, jnp.where(solved, params.reward_solved, params.reward_guess),
                           params.bad_word_reward).astype(jnp.float32)
        time = state.time + 1
        new = state.replace(
            time=time, kind=rows_kind, code=state.code.at[row].set(code), word=rows_word,
            marks=state.marks.at[row].set(jnp.where(valid, marks, NO_MARK)),
            consistent=consistent, count=count, solved=solved)
        terminated = solved | (time >= self.num_tries)
        info = {"valid_action": valid, "consistent": count, "solved": solved}
        return self.observe(key, new, a, params), new, reward, terminated, info

    def observe(self, key, state: WordleState, action, params) -> dict:
        # One op per digit with a constant divisor: the compiler turns it into a multiply
        # (an array of divisors costs a hardware division per element).
        digits = jnp.stack([(state.code // int(p)) % BASE for p in POW27], axis=1)  # [T, 5], 0 = none
        letters = jnp.where(digits > 0, digits - 1, NO_LETTER)
        sym = {"letters": letters.astype(jnp.int32), "marks": state.marks, "turn": state.time,
               "consistent": state.count}
        return {"symbolic": sym, "facts": self._facts(state, digits)}

    def _facts(self, state: WordleState, digits: jax.Array) -> dict:
        """The text facts. Texts end with a newline, so a rendering is content runs
        separated by newline runs; each run is written together with the letter after
        it (or at the very end), because a tokenizer splits a run differently before
        a letter than at the end of the text."""
        kind = state.kind
        content = (kind == VALID) | (kind == INVALID_LETTERS)
        trailing = jnp.where(kind == VALID, 1, jnp.where(kind == UNPLAYED, 0, 2))
        runs = []
        acc = jnp.int32(1)  # "Wordle:\n"
        for k in range(self.num_tries):
            runs.append(acc)
            acc = jnp.where(content[k], trailing[k], acc + trailing[k])
        run = jnp.stack(runs)
        out = {
            "row_kind": jnp.where(content, kind, 0).astype(jnp.int32),
            "row_run": jnp.where(content, jnp.clip(run, 1, self.max_run) - 1, 0).astype(jnp.int32),
            "row_first": jnp.where(content, jnp.maximum(digits[:, 0] - 1, 0), 0).astype(jnp.int32),
        }
        for i in range(1, N_CHARS):
            out[f"row_l{i}"] = jnp.where(content, digits[:, i], 0).astype(jnp.int32)
        out["row_marks"] = jnp.where(kind == VALID, jnp.sum(state.marks * jnp.asarray(POW3), axis=1),
                                     0).astype(jnp.int32)
        out["final_run"] = jnp.clip(acc, 1, self.max_run).astype(jnp.int32)
        return out

    # ------------------------------------------------------------------ helpers
    def action_of(self, text: str) -> int:
        """Host: the action index of a guess text, parsed as the reference parses
        (strip, remove spaces)."""
        word = text.strip().replace(" ", "")
        n = len(self.guesses)
        if not 1 <= len(word) <= N_CHARS or not all("a" <= c <= "z" for c in word):
            return n
        code = pack(word)
        i = int(np.searchsorted(self.guess_codes, code))
        if len(word) == N_CHARS and i < n and int(self.guess_codes[i]) == code:
            return i
        return n + 1 + code

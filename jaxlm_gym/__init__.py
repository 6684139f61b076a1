"""jaxlm-gym: multi-turn language-agent tasks as pure, vectorised JAX functions."""

from . import score, text
from .registry import EnvSpec, TaskText, list_envs, make, register, spec
from .vec_env import ACTION_MODES, OBS_MODES, VecEnv, make_vec
from . import tasks  # noqa: E402,F401  (registers the built-in envs)

__version__ = "0.1.0"

__all__ = [
    "ACTION_MODES", "EnvSpec", "OBS_MODES", "TaskText", "VecEnv", "list_envs", "make", "make_vec",
    "register", "score", "spec", "text",
]

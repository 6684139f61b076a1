"""The reference's per-task hyperparameters as named presets (spec §13; ``llm_rl_scripts/**``).

Every value comes from /work/shared/specs/lmrl-gym.md §13 unless a comment says otherwise. ``None`` means the
spec gives no value for that task; the comment next to a field says what we assumed where a number is needed.
Task keys follow the registry ids (``maze-fo``, ``wordle``, ...); Text-Nav FO and PO share one preset.

    >>> get_preset("ilql", "wordle").tau
    0.7
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from learners.bc import FILTER_RULES


def _check_positive(**values):
    for name, v in values.items():
        if v is not None and not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")


@dataclass(frozen=True)
class BCConfig:
    """BC (§13.1). Lengths: ``max_length`` for whole-history tasks, in/out for (state -> action) pairs."""

    lr: float
    batch_size: int
    grad_accum_steps: int = 1
    weight_decay: float = 0.0  # spec silent except Maze FO (1e-3); 0.0 assumed
    max_length: int | None = None
    max_input_length: int | None = None
    max_output_length: int | None = None
    traj_window: int | None = None  # PO maze history window (`traj_max_length`)

    def __post_init__(self):
        _check_positive(lr=self.lr, batch_size=self.batch_size, grad_accum_steps=self.grad_accum_steps)


@dataclass(frozen=True)
class FilteredBCConfig:
    """Filtered BC (§13.1): BC on the episodes kept by ``rule`` (see ``learners.bc.filter_mask``).

    Offline presets describe the reference's pre-filtered files (``*_filtered_*.jsonl``); ``rule`` is our
    reading of how they were filtered. Online presets filter each round of ``n_rollouts`` rollouts.
    """

    bc: BCConfig
    rule: str
    fraction: float = 1.0
    last_reward_value: float = 0.0
    online: bool = False
    n_rounds: int | None = None
    n_rollouts: int | None = None

    def __post_init__(self):
        if self.rule not in FILTER_RULES:
            raise ValueError(f"unknown filter rule {self.rule!r}; valid: {FILTER_RULES}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")


@dataclass(frozen=True)
class ILQLConfig:
    """ILQL (§13.2-13.3)."""

    lr: float
    tau: float
    cql_weight: float
    gamma: float = 0.99  # spec gives 0.99 for Maze FO only; assumed for every task
    polyak_alpha: float = 0.005
    hard_update_every: int | None = None
    beta: float | None = None  # decoding weight; None = spec silent
    batch_size: int | None = None  # spec: Maze FO 32, others silent
    grad_accum_steps: int = 1
    weight_decay: float = 0.0  # reference maze ILQL script default; spec silent
    max_length: int | None = None
    epochs: int | None = None
    model: str = "gpt2"

    def __post_init__(self):
        _check_positive(lr=self.lr, batch_size=self.batch_size, grad_accum_steps=self.grad_accum_steps)
        if not 0.0 < self.tau < 1.0:
            raise ValueError(f"tau (expectile) must be in (0, 1), got {self.tau}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.polyak_alpha <= 1.0:
            raise ValueError(f"polyak_alpha must be in (0, 1], got {self.polyak_alpha}")
        if self.cql_weight < 0:
            raise ValueError(f"cql_weight must be >= 0, got {self.cql_weight}")


@dataclass(frozen=True)
class MCConfig:
    """MC returns (§13.4)."""

    lr: float
    cql_weight: float
    gamma: float = 0.99
    beta: float | None = None
    batch_size: int | None = None  # spec silent for every task
    grad_accum_steps: int = 1
    weight_decay: float = 0.0  # spec silent
    max_length: int | None = None

    def __post_init__(self):
        _check_positive(lr=self.lr, batch_size=self.batch_size, grad_accum_steps=self.grad_accum_steps)
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")


@dataclass(frozen=True)
class PPOConfig:
    """PPO (§13.5); the defaults are the spec's general defaults."""

    lr: float = 1e-5
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    value_clip: float = 0.2
    value_loss_coef: float = 1.0
    init_kl_coef: float = 0.001
    kl_target: float | None = None  # adaptive controller only when both target and horizon are set
    kl_horizon: int | None = None
    bc_loss_weight: float = 0.0
    n_rollouts: int = 128
    rollout_bsize: int = 32
    train_bsize: int = 32
    grad_accum_steps: int = 1
    weight_decay: float = 0.0  # spec silent
    max_input_length: int = 512
    max_output_length: int = 512
    whiten_advantages: bool = True
    value_head_bias_init: float = 0.0  # Linear(n_embd -> 1), zero-init; maze scripts: bias -1
    runs_in_reference: bool = True  # False where the reference script cannot run (L20, L21)

    def __post_init__(self):
        _check_positive(lr=self.lr, clip=self.clip, value_clip=self.value_clip, n_rollouts=self.n_rollouts,
                        rollout_bsize=self.rollout_bsize, train_bsize=self.train_bsize,
                        grad_accum_steps=self.grad_accum_steps)
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")
        if (self.kl_target is None) != (self.kl_horizon is None):
            raise ValueError("set both kl_target and kl_horizon (adaptive KL) or neither (fixed KL)")

    @property
    def adaptive_kl(self) -> bool:
        return self.kl_target is not None


# ---------------------------------------------------------------- BC (§13.1)

_MAZE_FO_BC = BCConfig(lr=1e-4, weight_decay=1e-3, batch_size=128, max_input_length=256, max_output_length=8)
_CHESS_BC = BCConfig(lr=1e-4, weight_decay=1e-3, batch_size=32, grad_accum_steps=4,  # 32 x 4 = spec's 128
                     max_input_length=140, max_output_length=8)  # train_full_games_bc.py defaults
_DIALOGUE_BC = BCConfig(lr=1e-4, batch_size=4, grad_accum_steps=32, max_length=1024)

BC = {
    "maze-fo": _MAZE_FO_BC,
    # spec lists only max_in 1024 and the 40-text window for PO; the rest copied from Maze FO (assumption)
    "maze-po": dataclasses.replace(_MAZE_FO_BC, max_input_length=1024, traj_window=40),
    "wordle": BCConfig(lr=2e-3, batch_size=16, max_length=2048),
    "twenty-questions": _DIALOGUE_BC,
    "guess-city": _DIALOGUE_BC,
    "chess": _CHESS_BC,
    # spec: endgames max_in 150, max_out 10; optimiser fields assumed as full games
    "endgames": dataclasses.replace(_CHESS_BC, max_input_length=150, max_output_length=10),
    "text-nav": BCConfig(lr=1e-3, batch_size=16, max_length=2048),
    # car-dealer: spec silent
}

# ---------------------------------------------------------------- filtered BC (§13.1)

FILTERED_BC = {
    # offline: BC on the reference's filtered files
    "wordle": FilteredBCConfig(bc=BC["wordle"], rule="top_fraction", fraction=0.1),
    "maze-fo": FilteredBCConfig(bc=BC["maze-fo"], rule="last_reward", last_reward_value=0.0),  # goal = reward 0
    "maze-po": FilteredBCConfig(bc=BC["maze-po"], rule="last_reward", last_reward_value=0.0),
    "endgames": FilteredBCConfig(bc=BC["endgames"], rule="last_reward", last_reward_value=1.0),  # checkmate = +1
    # spec silent (no Text-Nav filtered file): the won episodes (last reward 1), as maze keeps its successes
    "text-nav": FilteredBCConfig(bc=BC["text-nav"], rule="last_reward", last_reward_value=1.0),
}


def _online(bc: BCConfig, **kw) -> FilteredBCConfig:
    # rounds of 128 rollouts, n_rounds=100, lr 1e-4 (spec); batch and lengths as the task's BC (assumption)
    return FilteredBCConfig(bc=dataclasses.replace(bc, lr=1e-4), online=True, n_rounds=100, n_rollouts=128, **kw)


ONLINE_FILTERED_BC = {
    "maze-fo": _online(BC["maze-fo"], rule="last_reward", last_reward_value=0.0),
    "maze-po": _online(BC["maze-po"], rule="last_reward", last_reward_value=0.0),
    "wordle": _online(BC["wordle"], rule="top_fraction", fraction=0.3),
    "chess": _online(BC["chess"], rule="all"),  # sorted by return, all kept
    "endgames": _online(BC["endgames"], rule="all"),
}

# ---------------------------------------------------------------- ILQL (§13.3; beta from §13.2)

ILQL = {
    # beta 8 during training; maze/ilql/eval_ilql.py defaults to 16
    "maze-fo": ILQLConfig(lr=1e-4, tau=0.95, cql_weight=0.0, gamma=0.99, batch_size=32, max_length=80, beta=8.0),
    "maze-po": ILQLConfig(lr=1e-4, tau=0.95, cql_weight=0.0, gamma=0.99, batch_size=32, max_length=328, beta=8.0),
    "wordle": ILQLConfig(lr=3e-5, tau=0.7, cql_weight=0.01, epochs=10, beta=32.0),
    "twenty-questions": ILQLConfig(lr=1e-5, tau=0.7, cql_weight=0.01, max_length=512, beta=16.0, model="gpt2-medium"),
    # spec groups Guess My City with 20Q; gpt2-medium is stated for 20Q's experiments script only
    "guess-city": ILQLConfig(lr=1e-5, tau=0.7, cql_weight=0.01, max_length=512, beta=16.0),
    "text-nav": ILQLConfig(lr=1e-4, tau=0.8, cql_weight=0.0, beta=16.0),
    "chess": ILQLConfig(lr=1e-4, tau=0.7, cql_weight=1.0, max_length=160),  # beta: spec silent
    "endgames": ILQLConfig(lr=1e-4, tau=0.7, cql_weight=1.0, max_length=160),
    "car-dealer": ILQLConfig(lr=1e-5, tau=0.7, cql_weight=0.01, beta=16.0),  # `ilql2` script
}

# ---------------------------------------------------------------- MC returns (§13.4)

MC = {
    "maze-fo": MCConfig(lr=1e-4, cql_weight=0.0, gamma=0.99, beta=8.0),
    "maze-po": MCConfig(lr=1e-4, cql_weight=0.0, gamma=0.99, beta=8.0),  # spec says "Maze" for both
    "wordle": MCConfig(lr=1e-5, cql_weight=0.01, gamma=0.99, beta=16.0),
    "text-nav": MCConfig(lr=1e-5, cql_weight=0.01, gamma=0.99, beta=16.0),
    "guess-city": MCConfig(lr=1e-5, cql_weight=0.01, gamma=0.99, beta=16.0),
    "chess": MCConfig(lr=1e-4, cql_weight=0.0, gamma=0.99),  # beta: "—" in the spec
    # twenty-questions, endgames, car-dealer: spec silent
}

# ---------------------------------------------------------------- PPO (§13.5)

_DIALOGUE_PPO = PPOConfig(bc_loss_weight=1.0)
PPO = {
    "maze-fo": PPOConfig(gamma=0.99, value_loss_coef=0.5, max_input_length=64, max_output_length=32,
                         bc_loss_weight=0.0, value_head_bias_init=-1.0),
    # spec: PO script defaults to maze_name="medium", rejected by setup_maze_env (L21); gamma, vf coef and
    # lengths not given for PO, so the general defaults are kept
    "maze-po": PPOConfig(bc_loss_weight=0.0, value_head_bias_init=-1.0, runs_in_reference=False),
    "wordle": _DIALOGUE_PPO,
    "text-nav": _DIALOGUE_PPO,
    "twenty-questions": _DIALOGUE_PPO,
    "guess-city": _DIALOGUE_PPO,
    "car-dealer": dataclasses.replace(_DIALOGUE_PPO, runs_in_reference=False),  # `assert 1 == 2` (L20)
    # online chess: gamma 0.99 (spec); bc_loss_weight and lengths silent -> defaults kept
    "chess": PPOConfig(gamma=0.99),
}

PRESETS = {"bc": BC, "filtered_bc": FILTERED_BC, "online_filtered_bc": ONLINE_FILTERED_BC, "ilql": ILQL,
           "mc": MC, "ppo": PPO}

_ALIASES = {"text-nav-fo": "text-nav", "text-nav-po": "text-nav"}


def get_preset(algo: str, task: str):
    """The preset for ``algo`` (a key of ``PRESETS``) on ``task`` (a registry id). ValueError names choices."""
    if algo not in PRESETS:
        raise ValueError(f"unknown algorithm {algo!r}; valid: {sorted(PRESETS)}")
    table = PRESETS[algo]
    key = _ALIASES.get(task, task)
    if key not in table:
        raise ValueError(f"no {algo} preset for task {task!r}; valid: {sorted(table)}")
    return table[key]

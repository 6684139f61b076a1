"""LLF-Bench bandits (``llf-bandits-<Variant>-v0``), as a pure JAX core.

Facts follow LLF-Bench (``llfbench/envs/bandits/wrapper.py`` on top of JKCooper2/gym-bandits,
spec llf-bench.md section 2.1): arm ``i`` pays ``r[i]`` (Gaussian variant: a draw from
N(mean[i], 1)) with probability ``p[i]`` and 0 otherwise; the expected value of an arm is
``p * r`` (``p * mean``); the best arm is the argmax (first on ties, as ``np.argmax``);
``RandomActionOrderWrapper`` hides the arms behind a fresh permutation at every reset;
success is "the pulled arm is the best arm"; ``TerminalFreeWrapper`` means the episode never
ends (defect F3).

Randomness. The reference draws every table, permutation, pull and hint from the global
NumPy RNG; here each comes from the key handed to ``reset``/``step``, with the same
distributions: ``U[0, 1)`` for random p and r, ``N(0, 1)`` for Gaussian means, a uniform
permutation, a uniform non-best arm for the ``p`` hint and for ``fn``.

"Fixed" variants. The reference re-runs the bandit constructor at every reset, so the
random "...Fixed" variants (``TenArmedRandomFixed`` and every other 10-armed one) redraw
p and r every episode (defect F14). That is the default here (``redraw_each_episode=True``).
With ``redraw_each_episode=False`` the tables are those held by ``BanditsParams`` (``p``,
``r``): a pure env has no hidden construction-time RNG, so "fixed" means "fixed by the
params". ``default_params`` draws them once from ``jax.random.key(table_seed)`` (static
``table_seed``, default 0); ``draw_params(key)`` draws another fixed bandit (vmap it to get
a different fixed bandit per env). The two-armed variants always use the params tables,
which default to the reference's constants; overriding ``p``/``r`` in the params gives a
custom bandit with the same rules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from .llf import LLFEnv

#: Variant name -> (arms, p, r, one-line description). ``p``/``r``: a constant list, or
#: "uniform" (U[0, 1) per arm), or for r "gaussian" (mean ~ N(0, 1) per arm, payout ~ N(mean, 1)).
VARIANT_TABLE = {
    "TenArmedRandomFixed": (10, "uniform", [1.0] * 10, "ten arms, each paying 1 with its own random probability"),
    "TenArmedRandomRandom": (10, "uniform", "uniform", "ten arms with random payout probabilities and amounts"),
    "TenArmedGaussian": (10, [1.0] * 10, "gaussian", "ten arms always paying a normal draw around a random mean"),
    "TenArmedUniformDistributedReward": (10, [1.0] * 10, "uniform", "ten arms always paying a random fixed amount"),
    "TwoArmedDeterministicFixed": (2, [1.0, 0.0], [1.0, 1.0], "two arms: one always pays, the other never"),
    "TwoArmedHighHighFixed": (2, [0.8, 0.9], [1.0, 1.0], "two arms that both pay often"),
    "TwoArmedHighLowFixed": (2, [0.8, 0.2], [1.0, 1.0], "two arms: one pays often, the other rarely"),
    "TwoArmedLowLowFixed": (2, [0.1, 0.2], [1.0, 1.0], "two arms that both pay rarely"),
}
#: Variant names in registry order; ``facts["variant"]`` is an index into this tuple.
VARIANTS = tuple(VARIANT_TABLE)

#: ``max_steps_in_episode`` meaning "never truncate" (the reference never ends, F3).
NEVER = 2**31 - 1


@struct.dataclass
class BanditsState(environment.EnvState):
    """``time`` int32 (steps this episode, invalid ones included); ``p``, ``r`` float32[n]
    (payout probability and payout / Gaussian mean, *internal* arm order); ``perm``
    int32[n] (external arm -> internal arm, the reference's action table); ``best_arm``
    int32 (external); ``hint_arm`` int32 (external non-best arm of the ``p`` instruction);
    ``last_arm`` int32 (external arm pulled by the last step; n at reset and after invalid
    text); ``last_reward`` float32; ``pulls`` int32[n] and ``reward_sum`` float32[n] (this
    episode, external order)."""

    p: jax.Array
    r: jax.Array
    perm: jax.Array
    best_arm: jax.Array
    hint_arm: jax.Array
    last_arm: jax.Array
    last_reward: jax.Array
    pulls: jax.Array
    reward_sum: jax.Array


@struct.dataclass
class BanditsParams(environment.EnvParams):
    """Traced task parameters (build them with ``env.default_params`` or ``env.draw_params``).

    ``max_steps_in_episode``: truncation (default: the ``horizon`` flag, or never).
    ``p``, ``r``: float32[n] payout probabilities and payouts (Gaussian: means), internal
    order; used by the two-armed variants always, by the random ones only with
    ``redraw_each_episode=False``.
    """

    max_steps_in_episode: int = NEVER
    p: jax.Array | None = None
    r: jax.Array | None = None


class Bandits(LLFEnv):
    """LLF-Bench multi-armed bandit: find the arm with the highest expected payout.

    Static config: ``variant`` (one of ``VARIANTS``; a leading "Bandit" is accepted);
    ``instruction_type`` ("b", "p", "c"); ``feedback_type`` (see ``pure_envs.llf``);
    ``redraw_each_episode`` (True: the random variants redraw p and r at every reset, as the
    reference (F14); False: they keep the params' tables); ``table_seed`` (key of the tables
    in ``default_params``); ``horizon`` (None: never ends, as the reference (F3); an int:
    truncate after that many steps; sets ``default_params.max_steps_in_episode``).

    Observation (dict):
      symbolic: ``last_arm`` int32 (external arm pulled last step; n at reset / after
        invalid text), ``last_reward`` float32, ``pulls`` int32[n] and ``reward_sum``
        float32[n] (this episode, per external arm). The best arm is not in it.
      facts (scalars; what the text layer needs):
        ``at_reset`` int32: 1 on the reset observation.
        ``fb_r``  1 after a pull (states ``reward``), else 0.
        ``fb_hp`` 1 after a pull of the best arm (says it is the best arm), else 0.
        ``fb_hn`` 1 after a pull of another arm (says it lacks the highest expected reward).
        ``fb_fp`` 1 after a pull (recommends ``best_arm``, states ``best_reward``).
        ``fb_fn`` 1 after a pull (warns against ``fn_arm``, states ``fn_reward``).
        ``invalid`` int32: 1 when the action was no arm (the reference's TextWrapper: int()
          failed or the index is out of range). Then every ``fb_*`` is 0, the reward is 0.0,
          nothing is pulled; the text layer writes its own "cannot parse the action" message
          (the reference shows it whatever the feedback type).
        ``arm`` int32 (the pulled external arm; n at reset / invalid), ``reward`` float32.
        ``best_arm`` int32, ``best_reward`` float32 (its expected reward p*r).
        ``fn_arm`` int32, ``fn_reward`` float32: a uniform non-best arm, drawn every step
          from the step key (at reset, where fb_fn is 0: the hint arm).
        ``hint_arm`` int32, ``hint_reward`` float32: the ``p`` instruction's non-best arm
          (drawn at reset, fixed for the episode).
        ``variant`` int32 (index into ``VARIANTS``: the ``b`` instruction's one-line
          description, ``VARIANT_TABLE[name][3]`` is ours), ``n_arms`` int32,
          ``max_arm`` int32 (= n - 1, the top of the action range).
    Action: int32 scalar, external arm ``0..n-1``; ``n`` (``invalid_action``) or any other
      value is text that is no arm.
    Reward: float32, the raw pull outcome (0.0 for invalid text).
    Termination: never terminated; truncated after ``max_steps_in_episode`` steps (default
      never, see ``horizon``).
    Info: ``success`` bool (action == best arm), ``valid_action`` bool.
    State: ``BanditsState``.
    """

    INSTRUCTION_TYPES = ("b", "p", "c")
    FEEDBACK_TYPES = ("r", "hp", "hn", "fp", "fn")

    def __init__(self, variant: str = "TenArmedRandomFixed", instruction_type: str = "b", feedback_type="a",
                 redraw_each_episode: bool = True, table_seed: int = 0, horizon: int | None = None):
        super().__init__(instruction_type, feedback_type)
        name = variant[len("Bandit"):] if isinstance(variant, str) and variant.startswith("Bandit") else variant
        if name not in VARIANT_TABLE:
            raise ValueError(f"unknown bandit variant {variant!r}; valid variants: {list(VARIANTS)}")
        if horizon is not None and int(horizon) < 1:
            raise ValueError(f"horizon must be None (never end) or >= 1, got {horizon}")
        self.variant = name
        self.variant_id = VARIANTS.index(name)
        n, p_spec, r_spec, self.description = VARIANT_TABLE[name]
        self.n_arms = int(n)
        self.p_spec = p_spec if isinstance(p_spec, str) else tuple(p_spec)
        self.r_spec = r_spec if isinstance(r_spec, str) else tuple(r_spec)
        self.gaussian = r_spec == "gaussian"
        self.random_tables = isinstance(p_spec, str) or isinstance(r_spec, str)
        self.redraw_each_episode = bool(redraw_each_episode)
        self.table_seed = int(table_seed)
        self.horizon = None if horizon is None else int(horizon)
        self.fact_shapes = {k: () for k in (
            "at_reset", "fb_r", "fb_hp", "fb_hn", "fb_fp", "fb_fn", "invalid", "arm", "reward", "best_arm",
            "best_reward", "fn_arm", "fn_reward", "hint_arm", "hint_reward", "variant", "n_arms", "max_arm")}

    # ------------------------------------------------------------------ gymnax API
    def draw_params(self, key: jax.Array) -> BanditsParams:
        """Params holding one draw of this variant's tables (the constants for two arms)."""
        p, r = self._draw_tables(key)
        return BanditsParams(max_steps_in_episode=NEVER if self.horizon is None else self.horizon, p=p, r=r)

    @property
    def default_params(self) -> BanditsParams:
        return self.draw_params(jax.random.key(self.table_seed))

    @property
    def name(self) -> str:
        return f"llf-bandits-{self.variant}"

    @property
    def num_actions(self) -> int:
        return self.n_arms

    def action_space(self, params=None):
        return spaces.Discrete(self.n_arms)

    def observation_space(self, params=None):
        n = self.n_arms
        inf = jnp.inf
        sym = {"last_arm": spaces.Discrete(n + 1), "last_reward": spaces.Box(-inf, inf, (), jnp.float32),
               "pulls": spaces.Box(0, NEVER, (n,), jnp.int32), "reward_sum": spaces.Box(-inf, inf, (n,), jnp.float32)}
        ints = {"at_reset": 1, "fb_r": 1, "fb_hp": 1, "fb_hn": 1, "fb_fp": 1, "fb_fn": 1, "invalid": 1, "arm": n,
                "best_arm": n - 1, "fn_arm": n - 1, "hint_arm": n - 1, "variant": len(VARIANTS) - 1,
                "n_arms": n, "max_arm": n - 1}
        facts = {k: (spaces.Box(0, ints[k], (), jnp.int32) if k in ints else spaces.Box(-inf, inf, (), jnp.float32))
                 for k in self.fact_shapes}
        return spaces.Dict({"symbolic": spaces.Dict(sym), "facts": spaces.Dict(facts)})

    def check_params(self, params: BanditsParams) -> None:
        """Host-side check of concrete params (table shapes and probabilities)."""
        n = self.n_arms
        for name in ("p", "r"):
            t = getattr(params, name)
            if t is None or np.shape(t) != (n,):
                raise ValueError(f"params.{name} must be float32[{n}] for {self.variant!r}, got "
                                 f"{None if t is None else np.shape(t)}; build params with env.default_params")
        p = np.asarray(params.p)
        if (p < 0).any() or (p > 1).any():
            raise ValueError(f"params.p must lie in [0, 1], got {p.tolist()}")
        if int(params.max_steps_in_episode) < 1:
            raise ValueError(f"max_steps_in_episode must be >= 1, got {params.max_steps_in_episode}")

    def is_truncated(self, state: BanditsState, params: BanditsParams) -> jax.Array:
        return state.time >= params.max_steps_in_episode

    # ------------------------------------------------------------------ dynamics
    def _draw_tables(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        kp, kr = jax.random.split(key)
        n = self.n_arms
        if self.p_spec == "uniform":
            p = jax.random.uniform(kp, (n,), jnp.float32)
        else:
            p = jnp.asarray(self.p_spec, jnp.float32)
        if self.r_spec == "uniform":
            r = jax.random.uniform(kr, (n,), jnp.float32)
        elif self.r_spec == "gaussian":
            r = jax.random.normal(kr, (n,), jnp.float32)  # the arms' means, q*(a) ~ N(0, 1)
        else:
            r = jnp.asarray(self.r_spec, jnp.float32)
        return p, r

    def _other_arm(self, key: jax.Array, best: jax.Array) -> jax.Array:
        """A uniform external arm other than ``best`` (``np.random.choice`` of the rest)."""
        j = jax.random.randint(key, (), 0, self.n_arms - 1, jnp.int32)
        return j + (j >= best).astype(jnp.int32)

    @staticmethod
    def expected(state: BanditsState) -> jax.Array:
        """float32[n]: expected payout p*r (p*mean) per *external* arm."""
        return (state.p * state.r)[state.perm]

    def reset_env(self, key: jax.Array, params: BanditsParams):
        k_tab, k_perm, k_hint = jax.random.split(key, 3)
        p = jnp.asarray(params.p, jnp.float32)
        r = jnp.asarray(params.r, jnp.float32)
        if self.random_tables and self.redraw_each_episode:
            p, r = self._draw_tables(k_tab)  # F14: the reference re-runs the constructor
        n = self.n_arms
        perm = jax.random.permutation(k_perm, n).astype(jnp.int32)  # perm[external] = internal
        best_internal = jnp.argmax(p * r)
        best = jnp.argmax(perm == best_internal).astype(jnp.int32)
        state = BanditsState(time=jnp.int32(0), p=p, r=r, perm=perm, best_arm=best,
                             hint_arm=self._other_arm(k_hint, best), last_arm=jnp.int32(n),
                             last_reward=jnp.float32(0.0), pulls=jnp.zeros((n,), jnp.int32),
                             reward_sum=jnp.zeros((n,), jnp.float32))
        zero = jnp.int32(0)
        fb = {"fb_r": zero, "fb_hp": zero, "fb_hn": zero, "fb_fp": zero, "fb_fn": zero}
        return self._observe(state, jnp.int32(1), fb, zero, state.hint_arm), state

    def step_env(self, key: jax.Array, state: BanditsState, action, params: BanditsParams):
        n = self.n_arms
        a = jnp.asarray(action, jnp.int32)
        valid = (a >= 0) & (a < n)
        arm = jnp.clip(a, 0, n - 1)
        k_pull, k_gauss, k_fn = jax.random.split(key, 3)
        i = state.perm[arm]
        pays = jax.random.uniform(k_pull, (), jnp.float32) < state.p[i]
        payout = state.r[i]
        if self.gaussian:
            payout = payout + jax.random.normal(k_gauss, (), jnp.float32)  # N(mean, 1)
        # Invalid text: the reference's TextWrapper answers before the env is stepped.
        reward = jnp.where(valid & pays, payout, 0.0).astype(jnp.float32)
        best = valid & (arm == state.best_arm)
        onehot = (jnp.arange(n) == arm) & valid
        new = state.replace(
            time=jnp.minimum(state.time + 1, NEVER),
            last_arm=jnp.where(valid, arm, n).astype(jnp.int32),
            last_reward=reward,
            pulls=state.pulls + onehot.astype(jnp.int32),
            reward_sum=state.reward_sum + jnp.where(onehot, reward, 0.0))
        v = valid.astype(jnp.int32)
        fb = {"fb_r": v, "fb_hp": best.astype(jnp.int32), "fb_hn": (valid & ~best).astype(jnp.int32),
              "fb_fp": v, "fb_fn": v}
        obs = self._observe(new, jnp.int32(0), fb, (~valid).astype(jnp.int32), self._other_arm(k_fn, state.best_arm))
        info = {"success": best, "valid_action": valid}
        return obs, new, reward, jnp.bool_(False), info

    def _observe(self, state: BanditsState, at_reset, fb: dict, invalid, fn_arm) -> dict:
        ev = self.expected(state)
        facts = {
            "at_reset": at_reset, **fb, "invalid": invalid,
            "arm": state.last_arm, "reward": state.last_reward,
            "best_arm": state.best_arm, "best_reward": ev[state.best_arm],
            "fn_arm": fn_arm, "fn_reward": ev[fn_arm],
            "hint_arm": state.hint_arm, "hint_reward": ev[state.hint_arm],
            "variant": jnp.int32(self.variant_id), "n_arms": jnp.int32(self.n_arms),
            "max_arm": jnp.int32(self.n_arms - 1),
        }
        facts = {k: jnp.asarray(v, jnp.float32 if k.endswith("reward") else jnp.int32) for k, v in facts.items()}
        sym = {"last_arm": state.last_arm, "last_reward": state.last_reward, "pulls": state.pulls,
               "reward_sum": state.reward_sum}
        return {"symbolic": sym, "facts": facts}

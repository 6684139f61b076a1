"""JAX learners (BC, filtered BC, MC returns, ILQL, PPO) that train inside jitted loops."""

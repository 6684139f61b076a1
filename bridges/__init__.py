"""Tasks that need the host (batched callbacks: chess engines, ALFWorld, LLM oracles)."""

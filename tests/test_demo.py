"""The README's demo runs (sized down) and reports both policies."""

from __future__ import annotations

from jaxlm_gym import demo


def test_demo_runs_small(capsys):
    demo.main(["--num-envs", "8", "--steps", "40", "--chunks", "2"])
    out = capsys.readouterr().out
    assert "BFS-optimal" in out and "random" in out and "env-steps/s" in out
    assert "The goal is at position 8, 6." in out
    optimal = next(line for line in out.splitlines() if line.startswith("BFS-optimal"))
    assert "100.0%" in optimal  # the BFS policy always reaches the goal

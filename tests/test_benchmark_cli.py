"""Smoke test of the throughput benchmark CLI (benchmarks/throughput.py), sized down."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_cli_smoke(tmp_path):
    out_json, out_png = tmp_path / "out" / "t.json", tmp_path / "out" / "t.png"
    cmd = [sys.executable, "benchmarks/throughput.py", "--envs", "maze-fo", "--num-envs", "2", "--steps", "3",
           "--allow-short", "--repeats", "1", "--obs-mode", "symbolic,tokens", "--json", str(out_json),
           "--plot", str(out_png), "--no-cartpole"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]

    data = json.loads(out_json.read_text())
    assert set(data) >= {"rows", "machine", "command"}
    assert {"cpu_count", "jax", "backend", "devices"} <= set(data["machine"])
    rows = data["rows"]
    assert [(r["env"], r["obs_mode"], r["num_envs"]) for r in rows] == [("maze-fo", "symbolic", 2),
                                                                         ("maze-fo", "tokens", 2)]
    for r in rows:
        assert {"compile_s", "steps", "repeats", "seconds", "steps_per_s_best", "steps_per_s_median"} <= set(r)
        assert r["steps_per_s_best"] > 0 and r["steps_per_s_median"] > 0 and r["compile_s"] > 0

    assert "| env | feedback | obs_mode | num_envs |" in proc.stdout and "maze-fo" in proc.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        assert out_png.exists() and out_png.stat().st_size > 0


def test_throughput_cli_rejects_short_runs(tmp_path):
    cmd = [sys.executable, "benchmarks/throughput.py", "--envs", "maze-fo", "--steps", "3",
           "--json", str(tmp_path / "t.json"), "--no-cartpole"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--allow-short" in proc.stderr
    assert not (tmp_path / "t.json").exists()


def test_throughput_cli_cpu_devices(tmp_path):
    # Two CPU devices, the batch sharded over them: same totals as one device (the env is
    # the same program per row), and the row records the split.
    out_json = tmp_path / "t.json"
    cmd = [sys.executable, "benchmarks/throughput.py", "--envs", "maze-fo", "--num-envs", "4", "--steps", "3",
           "--allow-short", "--repeats", "1", "--obs-mode", "tokens", "--json", str(out_json),
           "--plot", str(tmp_path / "t.png"), "--no-cartpole", "--cpu-devices", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out_json.read_text())
    assert data["machine"]["devices"] == ["cpu:0", "cpu:1"]
    assert [r["cpu_devices"] for r in data["rows"]] == [2]
    assert "maze-fo (2 CPU devices)" in proc.stdout

    bad = cmd[:cmd.index("--num-envs") + 1] + ["3"] + cmd[cmd.index("--num-envs") + 2:]
    proc = subprocess.run(bad, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "multiples of --cpu-devices 2" in proc.stderr


def test_step_breakdown_cli_smoke(tmp_path):
    out_json = tmp_path / "b.json"
    cmd = [sys.executable, "benchmarks/step_breakdown.py", "--env", "maze-fo", "--feedback", "none",
           "--num-envs", "2", "--steps", "3", "--repeats", "1", "--json", str(out_json)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out_json.read_text())
    assert data["env"] == "maze-fo" and data["width"] > 0 and {"machine", "command"} <= set(data)
    assert {"write floor", "core step", "core reset", "symbolic VecEnv step", "tokens VecEnv step"} <= set(data["ms"])
    assert all(v > 0 for v in data["ms"].values())
    assert "| write floor |" in proc.stdout


def test_ilql_sweep_cli_smoke(tmp_path):
    """One tiny MC setting on maze-fo: the row carries the scores per beta, the timings and the Q map."""
    out = tmp_path / "sweep.json"
    cmd = [sys.executable, "benchmarks/ilql_sweep.py", "--bc-updates", "100", "--data-envs", "16", "--rollouts", "1",
           "--betas", "4", "8", "--out", str(out),
           "--configs", '[{"algo": "mc", "num_updates": 100, "batch_size": 8, "cql_weight": 1.0}]']
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["command"].startswith("python benchmarks/ilql_sweep.py --bc-updates 100")
    (row,) = data["rows"]
    assert row["algo"] == "mc" and row["config"]["num_updates"] == 100 and set(row["sampled"]) == {"4.0", "8.0"}
    assert row["train_s"] > 0 and row["data_env_steps_per_s"] > 0 and "q_map" in row
    for s in row["sampled"].values():
        assert len(s["per_start_return"]) == 25 and 0.0 <= s["valid_action_rate"] <= 1.0

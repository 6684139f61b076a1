"""Arrows point one way: nothing imports a package above it in the house table."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ALLOWED = {
    "pure_envs": {"pure_envs"},
    "bridges": {"bridges", "pure_envs"},
    "jaxlm_gym": {"jaxlm_gym", "pure_envs", "bridges"},
    "learners": {"learners", "jaxlm_gym", "pure_envs", "bridges"},
}
PROJECT = set(ALLOWED)


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_upward_imports(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    for path in files:
        bad = {m for m in _imports(path) if m in PROJECT and m not in ALLOWED[package]}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_pure_envs_use_only_their_allowed_libraries():
    allowed = {"jax", "chex", "flax", "gymnax", "numpy", "pure_envs", "__future__", "functools", "collections",
               "dataclasses", "typing", "math"}
    for path in sorted((ROOT / "pure_envs").rglob("*.py")):
        extra = set(_imports(path)) - allowed
        assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)}"

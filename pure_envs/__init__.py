"""Symbolic cores: pure ``reset``/``step`` functions and the facts each task says."""

from .base import TextEnv
from .maze import Maze, MazeParams, MazeState

__all__ = ["Maze", "MazeParams", "MazeState", "TextEnv"]

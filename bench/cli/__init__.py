"""The `vtbench` command line: `main.py` parses it; `grid.py` and `tune.py` launch studies."""

from .main import main

__all__ = ["main"]

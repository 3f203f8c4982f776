"""The supnet command line: one module per command group (``*_cmd.py``), each loaded only when its command runs.

The public API is the program (``app``, ``main``); tests drive a command through its own module's ``register``.
"""

from node.cli.main import app, main

__all__ = ["app", "main"]

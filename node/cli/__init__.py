"""The supnet command line: one module per command group, each ending in ``_cmd``."""

"""A whole supnet tree on one machine: the launcher behind ``supnet federation up`` and the demo."""

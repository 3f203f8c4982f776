"""One supnet node: rooms in sub-packages, and the root modules every room uses.

Rooms: cli, server, observability, drilldown, reporting, supervision, ingest, notify, trust, localtree, synthetic,
store, domain. Root modules: app, config, errors, audit_log, bootstrap, run_state. Which may import which:
pyproject.toml (import-linter) and docs/architecture.md.
"""

__all__: list[str] = []

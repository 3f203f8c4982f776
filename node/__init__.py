"""One supnet node: its rooms are the sub-packages (cli, server, drilldown, reporting, supervision, ingest, notify,
trust, localtree, synthetic, store, domain) and a few root modules every room uses (app, config, errors, audit_log,
bootstrap, run_state). Which may import which is in pyproject.toml (import-linter) and docs/architecture.md.
"""

__all__: list[str] = []

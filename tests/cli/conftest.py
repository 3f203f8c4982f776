"""Tests of node.cli through the real CLI on real nodes: init, import and stats; alerts, scan, metrics and stats
tables; audit; the working-day calendar commands; exit codes, the version and hints. (Commands of one room, e.g.
``supnet pki``, are tested with that room.)

No folder fixtures: each module registers the commands it runs in its own ``app`` fixture.
"""

"""Tests of node.localtree: the launcher (topology checks, a real tree of ``supnet serve`` processes) and the
docker-compose tree run as plain processes.

No folder fixtures.
"""

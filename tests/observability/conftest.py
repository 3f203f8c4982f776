"""Tests of node.observability: ``/metrics`` scraped over HTTP after real traffic on a real tree of nodes (reports,
drill-downs, gRPC ingest, scans, notifications), parsed by prometheus_client's own parser and checked against the
nodes' tables; the Grafana dashboard's names against that scrape; JSON and text log lines of real ``supnet``
processes.

No folder fixtures: test_metrics.py builds its tree once per module (``scrape``).
"""

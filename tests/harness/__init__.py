"""Helpers the test folders share (no tests here).

tree: the test tree of real nodes; reports: totals and forged reports of report-exchange tests; pki: enrolment,
channels and forged certificates; authorities: a child's CA without the enrolment flow; rules: a node fed through
the importer for supervision tests; clocks: a settable clock; postgres: the test PostgreSQL server;
ingest_records: records streamed over gRPC; local_servers: HTTP and SMTP servers that record what they receive;
serve_process: ``supnet serve`` as a process.
"""

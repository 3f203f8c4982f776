"""Supervision rules: the catalogue of monitoring rules and the engine that evaluates them (events and scans)."""

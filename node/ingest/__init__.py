"""Ingest: read, validate and store approval records from files or gRPC."""

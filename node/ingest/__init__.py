"""Ingest: read, validate and store approval records from files or gRPC."""

from node.ingest.fields import KIND_ORDER, RECORD_FIELDS, FieldSpec
from node.ingest.importer import Importer, ImportSummary, RecordOutcome
from node.ingest.listeners import IngestListener
from node.ingest.readers import ENCODINGS, FileReader, detect_encoding, kind_from_alias, kind_from_file_name, open_files
from node.ingest.validate import (
    BAD_BOOL,
    BAD_CODE,
    BAD_DATETIME,
    BAD_NUMBER,
    BAD_TEXT,
    KIND_TABLES,
    MISSING_FIELD,
    NATURAL_KEYS,
    NEGATIVE_FEE,
    TOO_LONG,
    RecordError,
    RecordInvalid,
    Validator,
    canonical_field,
    field_label,
    record_key,
)

__all__ = [
    "BAD_BOOL",
    "BAD_CODE",
    "BAD_DATETIME",
    "BAD_NUMBER",
    "BAD_TEXT",
    "ENCODINGS",
    "KIND_ORDER",
    "KIND_TABLES",
    "MISSING_FIELD",
    "NATURAL_KEYS",
    "NEGATIVE_FEE",
    "RECORD_FIELDS",
    "TOO_LONG",
    "FieldSpec",
    "FileReader",
    "ImportSummary",
    "Importer",
    "IngestListener",
    "RecordError",
    "RecordInvalid",
    "RecordOutcome",
    "Validator",
    "canonical_field",
    "detect_encoding",
    "field_label",
    "kind_from_alias",
    "kind_from_file_name",
    "open_files",
    "record_key",
]

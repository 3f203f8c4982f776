"""Synthetic approval data for a node: the national item catalogue, names, and the case generator."""

from node.synthetic.catalogue import national_catalogue
from node.synthetic.generator import DEFAULT_FROM, DEFAULT_TO, GenerateSummary, generate
from node.synthetic.names import GOVERNMENT_DEPARTMENTS, is_valid_credit_code, is_valid_resident_id
from node.synthetic.profile import iter_item_records, node_profile
from node.synthetic.writer import FILE_NAMES, JSONL_FILE_NAME, FileFormat

__all__ = [
    "DEFAULT_FROM",
    "DEFAULT_TO",
    "FILE_NAMES",
    "GOVERNMENT_DEPARTMENTS",
    "JSONL_FILE_NAME",
    "FileFormat",
    "GenerateSummary",
    "generate",
    "is_valid_credit_code",
    "is_valid_resident_id",
    "iter_item_records",
    "national_catalogue",
    "node_profile",
]

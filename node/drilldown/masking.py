"""Masking of personal data shown to supervisors: ID numbers like ``440***********1234``, names like ``张*``.

Applicant names and ID numbers never appear in reports; in drill-down answers they only ever appear masked.
"""

from __future__ import annotations

MASK_CHAR = "*"
# An 18-character resident ID keeps its 3-digit region prefix and last 4 characters, as counters in
# Chinese service halls print them; shorter numbers keep proportionally less.
_ID_KEEP_HEAD = 3
_ID_KEEP_TAIL = 4
_ID_MIN_LENGTH_TO_KEEP_ENDS = 10


def mask_id_number(value: str) -> str:
    """Mask a certificate number: keep the first 3 and last 4 characters of a long one, hide the rest."""
    text = value.strip()
    if not text:
        return ""
    if len(text) >= _ID_MIN_LENGTH_TO_KEEP_ENDS:
        hidden = len(text) - _ID_KEEP_HEAD - _ID_KEEP_TAIL
        return text[:_ID_KEEP_HEAD] + MASK_CHAR * hidden + text[-_ID_KEEP_TAIL:]
    # Short numbers (passports, old IDs): showing 7 characters would reveal most of them, so keep only the last 2.
    if len(text) > 4:
        return MASK_CHAR * (len(text) - 2) + text[-2:]
    return MASK_CHAR * len(text)


def mask_name(value: str) -> str:
    """Mask a person's name: keep the first character (the surname), one star per hidden character."""
    text = value.strip()
    if not text:
        return ""
    if len(text) == 1:
        return MASK_CHAR
    return text[0] + MASK_CHAR * (len(text) - 1)

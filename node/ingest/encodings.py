"""Which encoding an import file is read in, decided per file from unambiguous signals only.

``--encoding auto``: a UTF-8 byte order mark, else the whole file decoding strictly as UTF-8, says UTF-8; GB18030 only
when the whole file is NOT valid UTF-8 and IS valid GB18030. A file that is neither is read as UTF-8 line by line:
a line that does not decode is one rejected record (line and byte offset), never stored decoded in another encoding.
A statistical detector (chardet, charset-normalizer) guesses from a sample and can flip between GBK, Big5 and Latin
encodings on short or mixed files, so the same file could import differently on two nodes; and one broken byte in a
UTF-8 file must not turn its other rows into GB18030 mojibake that a corrected file then conflicts with.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

from node.errors import ValidationError

_SCAN_CHUNK = 1 << 20
_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "gb18030": "GB18030"}


@dataclass(frozen=True, slots=True)
class FileEncoding:
    """How one file is read: the codec, whether the whole file decodes with it, and a warning for the operator."""

    codec: str  # 'utf-8', 'utf-8-sig' (a BOM) or 'gb18030'
    clean: bool  # True: read through the C text layer; False: line by line, undecodable lines rejected
    warning: str | None = None


def decodes_cleanly(path: Path, codec: str) -> bool:
    """True when the whole file decodes strictly with ``codec`` (streamed in 1 MB chunks, C speed)."""
    decoder = codecs.getincrementaldecoder(codec)("strict")
    with path.open("rb") as handle:
        try:
            while chunk := handle.read(_SCAN_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _detect(path: Path) -> FileEncoding:
    with path.open("rb") as handle:
        bom = handle.read(3) == codecs.BOM_UTF8
    utf8 = "utf-8-sig" if bom else "utf-8"
    if decodes_cleanly(path, utf8):
        return FileEncoding(utf8, clean=True)
    if not bom and decodes_cleanly(path, "gb18030"):
        return FileEncoding("gb18030", clean=True)
    return FileEncoding(
        utf8,
        clean=False,
        warning=f"{path}: neither valid UTF-8 nor valid GB18030 as a whole: read as UTF-8, lines that do not decode "
        "are rejected (use --encoding gb18030 for a GB18030 file)",
    )


def detect_encoding(path: Path) -> str:
    """The encoding ``--encoding auto`` reads a file in: 'utf-8-sig' (BOM), 'utf-8' or 'gb18030' (module docstring)."""
    return _detect(path).codec


def resolve_encoding(path: Path, encoding: str) -> FileEncoding:
    """How to read ``path`` given the --encoding option (auto, utf-8, gb18030 and their aliases)."""
    if encoding == "auto":
        return _detect(path)
    normalized = encoding.lower().replace("_", "-")
    if normalized in {"utf-8", "utf8"}:
        # Tolerate a BOM even when UTF-8 is forced: Windows tools write one.
        codec = "utf-8-sig"
    elif normalized in {"gb18030", "gbk", "gb2312"}:
        # GB18030 is a superset of GBK and GB2312, so it reads their files too.
        codec = "gb18030"
    else:
        raise ValidationError(f"{path}: unknown encoding '{encoding}' (use auto, utf-8 or gb18030)", field="encoding")
    return FileEncoding(codec, clean=decodes_cleanly(path, codec))


def undecodable_message(codec: str, offset: int | None, bad: bytes) -> str:
    """Why a line was rejected: 'line is not valid UTF-8 (bytes ff 20 at byte offset 1234 of the file)'."""
    where = f" (bytes {bad.hex(' ')} at byte offset {offset} of the file)" if offset is not None else ""
    return f"line is not valid {_NAMES.get(codec, codec)}{where}; it was not imported (fix it, or use --encoding)"

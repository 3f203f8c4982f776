"""Regenerate the checked-in gRPC/protobuf code from protos/ (``python -m federation.codegen [--check]``).

This is THE one script that produces ``federation/proto/**``: ``*_pb2.py`` and ``*_pb2_grpc.py`` from
grpc_tools.protoc, ``*_pb2.pyi`` and ``*_pb2_grpc.pyi`` from mypy-protobuf, and the package ``__init__.py``
files. Output is generated into a scratch directory first, so ``--check`` can compare it byte for byte with
the checked-in tree (and report missing, changed and stale files) without touching anything.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
# Generated Python lives under the same path as the .proto files below protos/.
OUTPUT_PACKAGE = Path("federation") / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
INIT_TEXT = '"""Generated protobuf/gRPC code; do not edit (regenerate with python -m federation.codegen)."""\n'


@dataclass(frozen=True, slots=True)
class TreeDifference:
    """How a freshly generated tree differs from the checked-in one (paths relative to the repo root)."""

    missing: tuple[str, ...]
    changed: tuple[str, ...]
    stale: tuple[str, ...]

    @property
    def clean(self) -> bool:
        """True when the checked-in tree equals the generated one."""
        return not (self.missing or self.changed or self.stale)


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """All .proto files under the output package path, sorted so protoc sees them in a stable order."""
    return sorted((proto_root / OUTPUT_PACKAGE).rglob("*.proto"))


def _plugin(name: str) -> str:
    """Locate a protoc plugin installed next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"protoc plugin {name} not found; install the dev extra (mypy-protobuf)")
    return found


def generate(destination: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Generate every output file into ``destination`` (a repo-root-like directory); return them sorted."""
    protos = proto_files(proto_root)
    if not protos:
        raise FileNotFoundError(f"no .proto files under {proto_root / OUTPUT_PACKAGE}")
    relative = [str(path.relative_to(proto_root)) for path in protos]
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={destination}",
        f"--grpc_python_out={destination}",
        f"--mypy_out={destination}",
        f"--mypy_grpc_out={destination}",
        *relative,
    ]
    logger.debug("running %s", command)
    # Run in proto_root with relative names so no absolute path of this machine leaks into the output.
    result = subprocess.run(command, cwd=proto_root, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed ({result.returncode}): {result.stderr.strip()}")
    package_dir = destination / OUTPUT_PACKAGE
    for directory in [package_dir, *sorted(p for p in package_dir.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").write_text(INIT_TEXT, encoding="utf-8")
    return sorted(p for p in package_dir.rglob("*") if p.is_file())


def _managed_files(root: Path) -> set[str]:
    """Files under root/federation/proto that this script owns, relative to root."""
    package_dir = root / OUTPUT_PACKAGE
    if not package_dir.exists():
        return set()
    return {
        str(path.relative_to(root))
        for path in package_dir.rglob("*")
        if path.is_file() and (path.name == "__init__.py" or path.name.endswith(GENERATED_SUFFIXES))
    }


def compare(generated_root: Path, checked_in_root: Path = REPO_ROOT) -> TreeDifference:
    """Compare a generated tree with the checked-in one, byte for byte."""
    fresh = _managed_files(generated_root)
    current = _managed_files(checked_in_root)
    changed = [
        name
        for name in sorted(fresh & current)
        if not filecmp.cmp(generated_root / name, checked_in_root / name, shallow=False)
    ]
    return TreeDifference(
        missing=tuple(sorted(fresh - current)), changed=tuple(changed), stale=tuple(sorted(current - fresh))
    )


def write(generated_root: Path, checked_in_root: Path = REPO_ROOT) -> TreeDifference:
    """Make the checked-in tree equal the generated one: copy new and changed files, delete stale ones."""
    difference = compare(generated_root, checked_in_root)
    for name in (*difference.missing, *difference.changed):
        target = checked_in_root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(generated_root / name, target)
    for name in difference.stale:
        (checked_in_root / name).unlink()
    return difference


def main(argv: list[str] | None = None) -> int:
    """Entry point: regenerate (default) or, with --check, exit 1 if the checked-in code is out of date."""
    parser = argparse.ArgumentParser(prog="python -m federation.codegen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if regenerating changes anything")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="supnet-codegen-") as scratch:
        scratch_root = Path(scratch)
        generate(scratch_root)
        if args.check:
            difference = compare(scratch_root)
            for label, names in (
                ("missing", difference.missing),
                ("changed", difference.changed),
                ("stale", difference.stale),
            ):
                for name in names:
                    logger.error("%s: %s", label, name)
            if not difference.clean:
                logger.error("generated code is out of date: run python -m federation.codegen")
                return 1
            logger.info("generated code is up to date")
            return 0
        difference = write(scratch_root)
        logger.info(
            "regenerated: %s new, %s changed, %s removed",
            len(difference.missing),
            len(difference.changed),
            len(difference.stale),
        )
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic approval data for one node: files in GB/T 39046 fields that ``supnet import`` accepts.

``generate`` runs the whole thing; what a node's data looks like, and why:

* Items come from the national catalogue (``catalogue.py``), as each node implements them (``profile.py``).
* Cases are drawn one by one (``cases.py``) and their records streamed to the writers (``records.py``, ``writer.py``):
  nothing large is held in memory.
* Rates (``rates.py``) follow the source reports: about 79% of completed cases early (Guangzhou 2007: 78.8%), ~10%
  open at ``--to``, ~3% with a special procedure (clock stop), ~8% with a supplement request and ~1% with a second one
  (breaking the one-time notification rule), ~4% returned, a few refusals, some without a reason, fees on fee items
  (~2% above the standard, ~0.5% of cases on free items charged anyway), evaluations on ~60% of completed cases,
  complaints on ~0.2%.
* Deterministic: chunks of cases each seeded from (node id, seed, chunk); same arguments give byte-identical files.
* Case and complaint numbers carry the node id and the day, so they are unique in the whole network; several runs
  for ONE node (other seeds) must cover disjoint periods, or their numbers meet with other content (conflicts).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from random import Random
from typing import Any

from node.domain import KIND_ORDER, load_calendar
from node.errors import ValidationError
from node.synthetic import names
from node.synthetic.cases import CaseGenerator
from node.synthetic.profile import NodeProfile, node_profile
from node.synthetic.rates import MAX_STOP_WORKDAYS, UNLINKED_COMPLAINT_SHARE
from node.synthetic.records import CaseRecorder
from node.synthetic.window import build_window
from node.synthetic.writer import COLUMNS, FILE_NAMES, JSONL_FILE_NAME, PARTS_DIR, FileFormat, PartWriter, assemble

log = logging.getLogger(__name__)

DEFAULT_FROM = date(2026, 1, 5)
DEFAULT_TO = date(2026, 10, 30)
CHUNK_CASES = 20_000  # cases per independently seeded chunk (the unit of parallel generation)


def derive_seed(node_id: str, seed: int, chunk: int = 0) -> int:
    """The random seed of one chunk of a node's generation: stable across processes and Python versions."""
    return names.stable_int("generate", node_id, seed, chunk)


@dataclass(frozen=True, slots=True)
class GenerateSummary:
    """What ``generate`` wrote: rows per file and per record kind."""

    node_id: str
    seed: int
    cases: int
    date_from: date
    date_to: date
    file_format: FileFormat
    out_dir: Path
    files: dict[str, int]
    records: dict[str, int]

    @property
    def paths(self) -> list[Path]:
        """The written files, in the order an import should read them."""
        return [self.out_dir / name for name in self.files]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "node_id": self.node_id,
            "seed": self.seed,
            "cases": self.cases,
            "from": self.date_from.isoformat(),
            "to": self.date_to.isoformat(),
            "format": self.file_format,
            "out": str(self.out_dir),
            "files": dict(self.files),
            "records": dict(self.records),
        }


def _check_arguments(cases: int, date_from: date, date_to: date) -> None:
    if cases < 0:
        raise ValidationError(f"--cases must be >= 0, got {cases}", field="cases", reason="bad_number")
    if date_to < date_from:
        raise ValidationError(f"--to {date_to} is before --from {date_from}", field="to", reason="inconsistent")


def _calendar_margin(profile: NodeProfile) -> int:
    """Working days past --to the calendar must cover: the importer computes every case's legal due date."""
    return max((node_item.item.legal_limit for node_item in profile.items), default=0) + MAX_STOP_WORKDAYS + 1


@dataclass(frozen=True, slots=True)
class _ChunkTask:
    """One chunk of cases, generated alone (possibly in another process) into its own part files."""

    node_id: str
    seed: int
    chunk: int
    first_seq: int
    last_seq: int
    date_from: date
    date_to: date
    holidays_file: Path | None
    file_format: FileFormat
    parts_dir: Path

    @property
    def name(self) -> str:
        """The chunk's part-file prefix; names sort in generation order."""
        return f"{self.chunk:05d}"


def _run_chunk(task: _ChunkTask) -> dict[str, int]:
    """Generate the cases of one chunk; returns rows written per kind."""
    profile = node_profile(task.node_id)
    cal = load_calendar(task.holidays_file)
    window = build_window(cal, task.date_from, task.date_to, _calendar_margin(profile))
    writer = PartWriter(task.parts_dir, task.name, task.file_format)
    try:
        generator = CaseGenerator(
            profile, Random(derive_seed(task.node_id, task.seed, task.chunk)), cal, window, writer.write
        )
        for seq in range(task.first_seq, task.last_seq + 1):
            generator.case(seq)
    finally:
        writer.close()
    return writer.counts


def generate(
    node_id: str,
    cases: int,
    seed: int,
    out_dir: Path,
    *,
    date_from: date = DEFAULT_FROM,
    date_to: date = DEFAULT_TO,
    file_format: FileFormat = "csv",
    holidays_file: Path | None = None,
    workers: int | None = None,
    chunk_cases: int = CHUNK_CASES,
) -> GenerateSummary:
    """Write a node's synthetic data to ``out_dir`` (one CSV per kind, or one JSONL file); deterministic per seed.

    Cases are drawn in chunks of ``chunk_cases``, each from its own seed, so the files are byte-identical whether the
    chunks run in one process or in ``workers`` processes (default: one per CPU, only when there are several chunks).
    """
    _check_arguments(cases, date_from, date_to)
    if chunk_cases < 1:
        raise ValidationError(f"chunk size must be >= 1, got {chunk_cases}", field="chunk_cases", reason="bad_number")
    profile = node_profile(node_id)
    cal = load_calendar(holidays_file)
    window = build_window(cal, date_from, date_to, _calendar_margin(profile))  # calendar errors before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    parts_dir = out_dir / PARTS_DIR
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir()
    tasks = [
        _ChunkTask(
            node_id,
            seed,
            chunk,
            first,
            min(first + chunk_cases - 1, cases),
            date_from,
            date_to,
            holidays_file,
            file_format,
            parts_dir,
        )
        for chunk, first in enumerate(range(1, cases + 1, chunk_cases))
    ]
    records = dict.fromkeys(KIND_ORDER, 0)
    try:
        items = PartWriter(parts_dir, "items", file_format)
        for node_item in profile.items:
            record = node_item.record(profile.level_code)
            items.write["item"](tuple(record.get(name, "") for name in COLUMNS["item"]))
        items.close()
        pool_size = min(workers or os.cpu_count() or 1, len(tasks))
        if pool_size > 1:
            # Spawned, not forked: the caller may run threads (a server, a launcher) that fork would copy mid-lock.
            with ProcessPoolExecutor(max_workers=pool_size, mp_context=multiprocessing.get_context("spawn")) as pool:
                chunk_counts = list(pool.map(_run_chunk, tasks))
        else:
            chunk_counts = [_run_chunk(task) for task in tasks]
        general = PartWriter(parts_dir, "general", file_format)
        try:
            rng = Random(derive_seed(node_id, seed, -1))
            CaseRecorder(profile, rng, cal, window, general.write).general_complaints(
                round(cases * UNLINKED_COMPLAINT_SHARE)
            )
        finally:
            general.close()
        for counts in [items.counts, *chunk_counts, general.counts]:
            for kind, count in counts.items():
                records[kind] += count
        assemble(out_dir, parts_dir, ["items", *(task.name for task in tasks), "general"], file_format)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    if file_format == "csv":
        files = {FILE_NAMES[kind]: records[kind] for kind in KIND_ORDER}
    else:
        files = {JSONL_FILE_NAME: sum(records.values())}
    log.info("generated %s cases for node %s (seed %s) into %s", cases, node_id, seed, out_dir)
    return GenerateSummary(
        node_id=node_id,
        seed=seed,
        cases=cases,
        date_from=date_from,
        date_to=date_to,
        file_format=file_format,
        out_dir=out_dir,
        files=files,
        records=records,
    )

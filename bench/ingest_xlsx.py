"""Workbook import benchmark: the same generated cases imported from CSV files and from one .xlsx workbook (SQLite).

Baselines measured in the same run: supnet's CSV import of the same records (what a workbook import is compared
with) and openpyxl's bare read-only pass over the workbook's rows (the floor for reading .xlsx at all). Date-times
are typed Excel cells in the workbook, as an office export holds them. Each measurement runs in its own child
process (its own peak RSS: streaming keeps it flat as the sheet grows). Prints records/s and ratios, then ONE JSON
line of the figures.

    .venv/bin/python -m bench.ingest_xlsx                 # 200,000 cases
    .venv/bin/python -m bench.ingest_xlsx --cases 20000   # quick check
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

# Run as a script, bench/ comes first on sys.path, where bench/federation.py would shadow the federation package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import _peak_rss_mb, in_child, supnet_import, write_files

# The workbook's sheets, named as the kinds they hold.
SHEETS = {"items.csv": "事项", "acceptances.csv": "事项受理", "completions.csv": "事项办结"}


def _cell(text: str) -> Any:
    """A CSV field as an office export types it: compact date-times become date-time cells, the rest text."""
    if len(text) == 15 and text[8] == "T" and text.replace("T", "").isdigit():
        return datetime.strptime(text, "%Y%m%dT%H%M%S")
    return text


def write_workbook(csv_files: list[Path], path: Path) -> None:
    """One sheet per CSV file (openpyxl write-only mode: streamed)."""
    import openpyxl

    workbook = openpyxl.Workbook(write_only=True)
    for csv_file in csv_files:
        sheet = workbook.create_sheet(SHEETS[csv_file.name])
        with csv_file.open(encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.reader(handle)):
                sheet.append(row if number == 0 else [_cell(field) for field in row])
    workbook.save(path)


def bare_read(path: str) -> dict[str, Any]:
    """The bare read-only pass of openpyxl over every row of every sheet: the floor for reading the workbook."""
    import openpyxl

    started, cpu_started = time.perf_counter(), time.process_time()
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    rows = 0
    for sheet in workbook.worksheets:
        for _ in sheet.iter_rows(values_only=True):
            rows += 1
    workbook.close()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "rows": rows,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows_per_s": rows / seconds,
        "peak_rss_mb": _peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    options = parser.parse_args()
    figures: dict[str, Any] = {"cases": options.cases, "batch_size": options.batch_size}
    with tempfile.TemporaryDirectory(prefix="supnet-bench-xlsx-") as workdir:
        started = time.perf_counter()
        items, acceptances, completions, accepted, completed = write_files(Path(workdir), options.cases)
        workbook = Path(workdir) / "办件.xlsx"
        write_workbook([items, acceptances, completions], workbook)
        print(
            f"generated {accepted:,} acceptances + {completed:,} completions as CSV and .xlsx "
            f"({workbook.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s"
        )
        figures["records"] = accepted + completed
        csv_import = in_child(supnet_import, workdir, "", [str(items), str(acceptances), str(completions)], 10_000)
        floor = in_child(bare_read, str(workbook))
        xlsx_import = in_child(supnet_import, workdir, "", [str(workbook)], options.batch_size)
    ratio = xlsx_import["records_per_s"] / csv_import["records_per_s"]
    # In CPU time too: this machine is shared, and wall time also counts other people's load.
    cpu_ratio = xlsx_import["records_per_cpu_s"] / csv_import["records_per_cpu_s"]
    read_share = floor["cpu_seconds"] / (xlsx_import["records"] / xlsx_import["records_per_cpu_s"])
    print(f"supnet import of CSV:    {csv_import['records_per_s']:>10,.0f} records/s  (the baseline)")
    print(f"openpyxl bare read:      {floor['rows_per_s']:>10,.0f} rows/s  (the floor of reading .xlsx)")
    print(
        f"supnet import of .xlsx:  {xlsx_import['records_per_s']:>10,.0f} records/s  ratio to CSV {ratio:.2f}  "
        f"(CPU time: {cpu_ratio:.2f}; bare reading is {read_share:.0%} of its CPU time)"
    )
    print(
        f"peak RSS: .xlsx {xlsx_import['peak_rss_mb']:.0f} MB, CSV {csv_import['peak_rss_mb']:.0f} MB  "
        f"({xlsx_import['records']:,} records, {xlsx_import['rejected']} rejected)"
    )
    figures["csv"] = {
        "records_per_s": round(csv_import["records_per_s"]),
        "peak_rss_mb": round(csv_import["peak_rss_mb"], 1),
        "rejected": csv_import["rejected"],
    }
    figures["xlsx"] = {
        "records_per_s": round(xlsx_import["records_per_s"]),
        "ratio_to_csv": round(ratio, 3),
        "cpu_ratio_to_csv": round(cpu_ratio, 3),
        "bare_read_rows_per_s": round(floor["rows_per_s"]),
        "bare_read_cpu_share": round(read_share, 3),
        "peak_rss_mb": round(xlsx_import["peak_rss_mb"], 1),
        "rejected": xlsx_import["rejected"],
    }
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()

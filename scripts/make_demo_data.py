#!/usr/bin/env python
"""Generate the seed-shaped supplier-orders demo data set (see batchrun/demo.py).

    python scripts/make_demo_data.py OUT_DIR [--suppliers 20] [--files-per-supplier 5]
        [--file-mb 2.0] [--seed 42] [--gzip-every 0] [--quoted-newline-rate 0.0]
        [--bad-row-rate 0.0] [--bad-files]

Prints one summary line: files, rows, MB on disk (10**6 bytes), seconds; in messy mode
(--bad-row-rate > 0 or --bad-files) also the valid rows, rejects and quarantined files
the demo job must end with (the exact truth is in OUT_DIR/_truth.json).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_demo_module() -> ModuleType:
    """Import ``batchrun.tools.demo``; fall back to the checkout this script lives in."""
    try:
        return importlib.import_module("batchrun.tools.demo")
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))
        return importlib.import_module("batchrun.tools.demo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the data set into")
    parser.add_argument("--suppliers", type=int, default=20)
    parser.add_argument("--files-per-supplier", type=int, default=5)
    parser.add_argument("--file-mb", type=float, default=2.0, help="uncompressed MB per file")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--gzip-every", type=int, default=0, help="0 = none; k = every k-th file")
    parser.add_argument("--quoted-newline-rate", type=float, default=0.0)
    parser.add_argument("--bad-row-rate", type=float, default=0.0,
                        help="share of rows per file given one known fault (keep < 0.05)")
    parser.add_argument("--bad-files", action="store_true",
                        help="add one broken file of each kind (empty, binary, truncated, ...)")
    return parser.parse_args(argv)


def bytes_on_disk(out_dir: Path, rel_paths: list[str]) -> int:
    return sum((out_dir / rel).stat().st_size for rel in rel_paths)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    demo = load_demo_module()
    spec = demo.DemoSpec(
        out_dir=args.out_dir,
        suppliers=args.suppliers,
        files_per_supplier=args.files_per_supplier,
        file_bytes=int(args.file_mb * 1_000_000),
        seed=args.seed,
        gzip_every=args.gzip_every,
        quoted_newline_rate=args.quoted_newline_rate,
        bad_row_rate=args.bad_row_rate,
        bad_files=args.bad_files,
    )
    start = time.perf_counter()
    truth = demo.generate(spec)
    seconds = time.perf_counter() - start
    megabytes = bytes_on_disk(spec.out_dir, list(truth.files)) / 1_000_000
    messy = ""
    if spec.bad_row_rate > 0 or spec.bad_files:
        messy = (
            f"; expect {truth.total_valid_rows:,} valid rows, {truth.total_rejects:,} rejects, "
            f"{truth.quarantined_files} quarantined files"
        )
    print(
        f"wrote {len(truth.files)} files, {truth.total_rows:,} rows, "
        f"{megabytes:.1f} MB in {seconds:.2f} s -> {spec.out_dir}{messy}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

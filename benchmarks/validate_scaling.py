"""How `dagsmith validate`'s time grows with the size of the spec: time per KB, 10 KB to the limit.

Each spec has one source and N features of about 1 KB each (inputs, a transform, a long
description), so the largest one is just under both the file size limit (10,000,000 bytes) and the
step limit (10,000). Each size is validated with `dagsmith.spec.check_all` (what `dagsmith
validate` runs: the spec and each environment, one reading of the file) in a fresh process, the
median of --repeat runs. The table shows the time per KB staying flat; the script exits 1 when the
time per KB at the largest size is more than --tolerance times the one at 100 KB.

    python benchmarks/validate_scaling.py                # about a minute
    python benchmarks/validate_scaling.py --repeat 5 --keep
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HEAD = """\
dagsmith: 1
pipeline:
  name: scaling
sources:
  rows: {type: csv, uri: data/rows.csv}
training:
  inputs: [rows]
  target: y
  model: {estimator: sklearn.linear_model.LogisticRegression}
evaluation:
  metrics: [accuracy]
environments:
  dev: {pipeline: {description: the dev environment}}
  prod: {pipeline: {description: the prod environment}}
features:
"""
WORDS = "the share of active days in the last four weeks, per customer and plan, "


def feature(index: int) -> str:
    text = (WORDS * 14)[:905].rstrip()
    return f"  feature_{index:05d}:\n    inputs: [rows]\n    transform: pkg.features:make_{index}\n    description: {text}\n"


def spec_of_size(target_bytes: int, max_steps: int) -> str:
    one = len(feature(99_999).encode())  # the longest (the numbers grow)
    count = max(1, min(max_steps - 1, (target_bytes - len(HEAD)) // one))  # + the source
    return HEAD + "".join(feature(i) for i in range(count))


def child(path: str, repeat: int) -> None:
    import time

    from dagsmith.spec import check_all

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        errors, _ = check_all(path)
        times.append(time.perf_counter() - start)
        if errors:
            raise SystemExit(f"{path}: not valid: {errors[0].format()}")
    print(json.dumps({"seconds": statistics.median(times)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (median reported)")
    parser.add_argument("--tolerance", type=float, default=2.0, help="allowed growth of the time per KB")
    parser.add_argument("--keep", action="store_true", help="keep the generated specs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.repeat)
        return 0

    from dagsmith.spec import limits

    sizes = [("10 KB", 10_000), ("100 KB", 100_000), ("1 MB", 1_000_000), ("limit", limits.MAX_FILE_BYTES)]
    folder = Path(tempfile.mkdtemp(prefix="dagsmith-scaling-"))
    rows = []
    for label, size in sizes:
        path = folder / f"spec-{size}.yaml"
        path.write_text(spec_of_size(size, limits.MAX_STEPS), encoding="utf-8")
        actual = path.stat().st_size
        steps = path.read_text(encoding="utf-8").count("\n  feature_") + 1
        assert actual <= limits.MAX_FILE_BYTES and steps <= limits.MAX_STEPS, (actual, steps)
        out = subprocess.run([sys.executable, __file__, "--child", str(path), "--repeat", str(args.repeat)],
                             capture_output=True, text=True, check=True).stdout
        seconds = json.loads(out.splitlines()[-1])["seconds"]
        rows.append((label, actual, steps, seconds))
    base = next(r for r in rows if r[0] == "100 KB")
    base_per_kb = base[3] * 1000 / (base[1] / 1000)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"validate time per KB (load average {load:.2f} on {os.cpu_count()} cores; median of {args.repeat})\n")
    print("| spec | size (bytes) | steps | validate (ms) | ms per KB | vs 100 KB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, actual, steps, seconds in rows:
        per_kb = seconds * 1000 / (actual / 1000)
        print(f"| {label} | {actual:,} | {steps:,} | {seconds * 1000:,.0f} | {per_kb:.3f} | {per_kb / base_per_kb:.2f}x |")
    largest = rows[-1]
    growth = largest[3] * 1000 / (largest[1] / 1000) / base_per_kb
    ok = growth <= args.tolerance
    print(f"\n{'PASS' if ok else 'FAIL'}: time per KB at the limit is {growth:.2f}x the one at 100 KB (at most {args.tolerance}x)")
    if args.keep:
        print(f"specs kept in {folder}")
    else:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

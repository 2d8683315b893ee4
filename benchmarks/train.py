"""Training time of the built-in torch estimator (dagsmith.estimators.TorchMLPClassifier) with
1 vs 2 data-parallel workers (training.distributed: {framework: torch}), on CPU.

    python benchmarks/train.py [--rows 4000] [--epochs 20] [--repeats 3] [--workers 1,2]

Each configuration runs the runtime's launcher (dagsmith.runtime.distributed.run_workers: the
same processes, gloo process group and sharding as a train step) `--repeats` times; the table
gives the median of
- wall: launch to last worker exit (includes starting Python + torch in every worker),
- fit: the slowest worker's time inside `fit` (the training itself),
and each one's speed-up over 1 worker. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def data(rows: int, features: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    w = rng.normal(size=features)
    y = ((X @ w + 0.5 * np.sin(3 * X[:, 0]) + rng.normal(scale=0.5, size=rows)) > 0).astype(int)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(features)])
    cut = int(rows * 0.8)
    return (frame.iloc[:cut].reset_index(drop=True), pd.Series(y[:cut], name="y"),
            frame.iloc[cut:].reset_index(drop=True), pd.Series(y[cut:], name="y"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", default="128,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()

    from dagsmith.runtime.distributed import Job, run_workers

    X_train, y_train, X_test, y_test = data(args.rows, args.features)
    params = {"hidden_layers": [int(h) for h in args.hidden.split(",")], "epochs": args.epochs,
              "batch_size": args.batch_size, "lr": 0.003, "seed": 0}
    output_dir = tempfile.mkdtemp(prefix="dagsmith-bench-")
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        walls, fits, accuracy = [], [], None
        for _ in range(args.repeats):
            job = Job(framework="torch", workers=workers, gpus_per_worker=0,
                      model={"estimator": "dagsmith.estimators.TorchMLPClassifier", "params": params}, params={},
                      target="y", features=list(X_train.columns), root=os.getcwd(),
                      output_dir=output_dir)
            started = time.perf_counter()
            run = run_workers(job, X_train, y_train, X_test, y_test)
            walls.append(time.perf_counter() - started)
            fits.append(max(r["fit_seconds"] for r in run.reports))
            accuracy = float((run.fitted.predict(X_test) == y_test.to_numpy()).mean())
        rows.append({"workers": workers, "wall": statistics.median(walls), "fit": statistics.median(fits),
                     "accuracy": accuracy})
    shutil.rmtree(output_dir, ignore_errors=True)
    base = rows[0]
    print(f"TorchMLPClassifier, {len(X_train)} train rows x {args.features} features, hidden {params['hidden_layers']}, "
          f"{args.epochs} epochs, batch {args.batch_size} per worker; {os.cpu_count()} CPU(s), torch.distributed gloo; "
          f"median of {args.repeats}\n")
    print("| workers | wall s | fit s | wall speed-up | fit speed-up | test accuracy |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['workers']} | {row['wall']:.2f} | {row['fit']:.2f} | {base['wall'] / row['wall']:.2f}x "
              f"| {base['fit'] / row['fit']:.2f}x | {row['accuracy']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

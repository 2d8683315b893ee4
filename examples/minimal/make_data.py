"""Generate the minimal example's data: data/applicants.csv (loan applicants, binary label).

Deterministic (seeded), standard library only. Run from anywhere:
    python examples/minimal/make_data.py
"""
import csv
import math
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
N_ROWS = 400


def main():
    rng = random.Random(7)
    DATA.mkdir(parents=True, exist_ok=True)
    rows = []
    for _ in range(N_ROWS):
        income_k = round(rng.lognormvariate(math.log(45), 0.4), 1)
        debt_ratio = round(min(0.95, max(0.0, rng.gauss(0.35, 0.15))), 3)
        years_employed = max(0, int(rng.expovariate(1 / 6)))
        late_payments = min(12, int(rng.expovariate(1 / 1.2)))
        z = -1.2 - 0.05 * (income_k - 45) + 8.0 * (debt_ratio - 0.35) - 0.2 * years_employed + 0.9 * late_payments
        defaulted = 1 if rng.random() < 1 / (1 + math.exp(-z)) else 0
        rows.append((income_k, debt_ratio, years_employed, late_payments, defaulted))
    with open(DATA / "applicants.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["income_k", "debt_ratio", "years_employed", "late_payments", "defaulted"])
        w.writerows(rows)
    print(f"wrote {DATA.relative_to(HERE.parent.parent)}/applicants.csv: {len(rows)} rows, "
          f"default rate {sum(r[-1] for r in rows) / len(rows):.0%}")


if __name__ == "__main__":
    main()

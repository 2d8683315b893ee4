"""Generate the forecast example's data: data/sales.csv (daily units per store, 40 regions, 2024).

Deterministic (seeded), standard library only. Run from anywhere:
    python examples/forecast/make_data.py
"""
import csv
import math
import random
from datetime import date, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

SEED = 1234
START = date(2024, 1, 1)
DAYS = 364  # 52 full weeks
REGIONS = [f"{area}-{n:02d}" for area in ("na", "eu", "ap", "sa") for n in range(1, 11)]  # 40 regions
# Mon..Sun multipliers: quiet midweek, busy Friday/Saturday
WEEKDAY = [0.85, 0.8, 0.85, 0.95, 1.2, 1.45, 0.9]


def main():
    rng = random.Random(SEED)
    DATA.mkdir(parents=True, exist_ok=True)
    rows = []
    store_id = 1000
    for region in REGIONS:
        region_level = rng.uniform(40, 160)
        region_trend = rng.uniform(-0.0005, 0.0015)  # relative growth per day
        for _ in range(rng.randint(2, 4)):
            store_id += 1
            level = region_level * rng.uniform(0.6, 1.4)
            base_price = round(rng.uniform(4.0, 9.0), 2)
            weekday_shape = [m * rng.uniform(0.93, 1.07) for m in WEEKDAY]
            for d in range(DAYS):
                day = START + timedelta(days=d)
                promo = 1 if rng.random() < 0.08 else 0
                price = round(base_price * (0.8 if promo else 1.0), 2)
                yearly = 1.0 + 0.12 * math.sin(2 * math.pi * (d - 80) / 365.0)
                mean = level * (1 + region_trend * d) * weekday_shape[day.weekday()] * yearly * (1.3 if promo else 1.0)
                units = max(0, round(rng.gauss(mean, 0.06 * mean)))
                rows.append((day.isoformat(), region, store_id, units, price, promo))

    with open(DATA / "sales.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["date", "region", "store_id", "units_sold", "price", "promo"])
        w.writerows(rows)
    print(f"wrote {DATA.relative_to(HERE.parent.parent)}/sales.csv: {len(rows)} rows, "
          f"{len(REGIONS)} regions, {store_id - 1000} stores, {DAYS} days")


if __name__ == "__main__":
    main()

"""Generate the churn example's data: data/plans.csv, data/customers.csv, data/events.csv.

Deterministic (seeded), standard library only. Run from anywhere:
    python examples/churn/make_data.py
"""
import csv
import math
import random
from datetime import date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

SEED = 20240701
N_CUSTOMERS = 2000
WINDOW_START = datetime(2024, 4, 1)  # events cover 13 weeks ending 2024-06-30
WINDOW_DAYS = 91
LOOKBACK_DAYS = 30  # the pipeline's default lookback_days

PLANS = [
    # plan_id, plan_name, monthly_price, annual_billing
    (1, "basic", 9.0, 0),
    (2, "standard", 19.0, 0),
    (3, "standard-annual", 16.0, 1),
    (4, "premium", 39.0, 0),
    (5, "premium-annual", 33.0, 1),
]
PLAN_WEIGHTS = [0.35, 0.25, 0.15, 0.15, 0.10]
COUNTRIES = ["de", "fr", "gb", "nl", "es", "us"]
COUNTRY_WEIGHTS = [0.25, 0.15, 0.2, 0.1, 0.1, 0.2]


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def poisson(rng, lam):
    # Knuth's method; lam stays small here.
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def main():
    rng = random.Random(SEED)
    DATA.mkdir(parents=True, exist_ok=True)
    window_end = WINDOW_START + timedelta(days=WINDOW_DAYS)

    customers, events = [], []
    for i in range(N_CUSTOMERS):
        customer_id = 100001 + i
        plan = rng.choices(PLANS, PLAN_WEIGHTS)[0]
        signup = date(2019, 1, 1) + timedelta(days=rng.randrange(0, 1945))  # up to 2024-05
        tenure_months = (date(2024, 6, 30) - signup).days / 30.4
        # latent engagement: sessions per week, heavier users stay longer
        engagement = rng.lognormvariate(math.log(1.0), 0.7)
        # customers drifting away use the product less in the last weeks
        fading = rng.random() < 0.3
        unhappy = rng.random() < 0.2
        for day in range(WINDOW_DAYS):
            rate = engagement / 7.0
            if fading and day > WINDOW_DAYS - 45:
                rate *= 0.25
            for _ in range(poisson(rng, rate)):
                ts = WINDOW_START + timedelta(days=day, seconds=rng.randrange(6 * 3600, 24 * 3600))
                duration = int(rng.lognormvariate(math.log(420), 0.6))
                events.append((customer_id, ts, "session", duration))
                if rng.random() < 0.06:
                    events.append((customer_id, ts + timedelta(minutes=rng.randrange(1, 30)), "purchase", 0))
            if rng.random() < (0.012 if unhappy else 0.002):
                ts = WINDOW_START + timedelta(days=day, seconds=rng.randrange(8 * 3600, 20 * 3600))
                events.append((customer_id, ts, "support_ticket", 0))
        customers.append([customer_id, signup.isoformat(), plan[0], rng.choices(COUNTRIES, COUNTRY_WEIGHTS)[0],
                          rng.randint(18, 75), tenure_months])

    # label: churned in the month after the data ends, driven by what the features can see
    events.sort(key=lambda e: (e[1], e[0]))
    as_of = events[-1][1]
    cutoff = as_of - timedelta(days=LOOKBACK_DAYS)
    recent, tickets = {}, {}
    for cid, ts, kind, _ in events:
        if kind == "session" and ts > cutoff:
            recent[cid] = recent.get(cid, 0) + 1
        if kind == "support_ticket":
            tickets[cid] = tickets.get(cid, 0) + 1
    price = {p[0]: p[2] for p in PLANS}
    annual = {p[0]: p[3] for p in PLANS}
    for row in customers:
        cid, plan_id, tenure = row[0], row[2], row.pop()
        z = (1.6 - 0.45 * recent.get(cid, 0) - 0.05 * tenure + 0.9 * tickets.get(cid, 0)
             + 0.03 * (price[plan_id] - 20) - 0.8 * annual[plan_id])
        row.append(1 if rng.random() < sigmoid(z) else 0)

    with open(DATA / "plans.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["plan_id", "plan_name", "monthly_price", "annual_billing"])
        w.writerows(PLANS)
    with open(DATA / "customers.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "signup_date", "plan_id", "country", "age", "churned"])
        w.writerows(customers)
    with open(DATA / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "customer_id", "ts", "event_type", "duration_s"])
        for n, (cid, ts, kind, dur) in enumerate(events, start=1):
            w.writerow([n, cid, ts.strftime("%Y-%m-%d %H:%M:%S"), kind, dur])

    churn_rate = sum(r[-1] for r in customers) / len(customers)
    print(f"wrote {DATA.relative_to(HERE.parent.parent)}/: plans.csv ({len(PLANS)} rows), customers.csv ({len(customers)} rows, "
          f"churn rate {churn_rate:.0%}), events.csv ({len(events)} rows)")


if __name__ == "__main__":
    main()

"""Generate the spaceflights example's data, in the shape of the Kedro "spaceflights" starter's
files: data/companies.csv, data/reviews.csv, data/shuttles.csv (ratings as "90%", prices as
"$1,325.0", flags as "t"/"f", some values missing, as in Kedro's raw data).

Deterministic (seeded), standard library only. Run from anywhere:
    python examples/spaceflights/make_data.py
"""
import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
N_COMPANIES = 60
N_SHUTTLES = 400
LOCATIONS = ["Niue", "Anguilla", "Russian Federation", "Barbados", "Sao Tome and Principe"]
TYPES = ["Type V5", "Type F5", "Type A1"]
ENGINES = ["Quantum", "Plasma", "Nuclear"]
VENDORS = ["ThetaBase Services", "Banks, Wood and Phillips", "Walsh-Mcdonald"]
POLICIES = ["strict", "moderate", "flexible"]


def flag(rng, p: float) -> str:
    return "t" if rng.random() < p else "f"


def maybe(rng, text: str, p_missing: float = 0.03) -> str:
    return "" if rng.random() < p_missing else text


def main():
    rng = random.Random(3)
    DATA.mkdir(parents=True, exist_ok=True)
    companies = []
    for cid in range(1, N_COMPANIES + 1):
        rating = rng.randint(60, 100)
        companies.append({"id": 3000 + cid, "company_rating": maybe(rng, f"{rating}%"),
                          "company_location": rng.choice(LOCATIONS),
                          "total_fleet_count": rng.randint(1, 9), "iata_approved": flag(rng, 0.6)})
    shuttles, reviews = [], []
    for sid in range(1, N_SHUTTLES + 1):
        company = rng.choice(companies)
        engines = rng.randint(1, 4)
        capacity = rng.randint(1, 8)
        crew = rng.randint(1, 6)
        d_check, moon = flag(rng, 0.5), flag(rng, 0.6)
        review = round(rng.uniform(70, 100), 1)
        rating = float(company["company_rating"].rstrip("%") or 80) / 100
        price = (600 + 180 * engines + 95 * capacity + 40 * crew + 120 * (d_check == "t") + 80 * (moon == "t")
                 + 150 * (company["iata_approved"] == "t") + 500 * rating + 6 * (review - 85) + rng.gauss(0, 160))
        shuttles.append({"id": 10000 + sid, "shuttle_location": rng.choice(LOCATIONS), "shuttle_type": rng.choice(TYPES),
                         "engine_type": rng.choice(ENGINES), "engine_vendor": rng.choice(VENDORS), "engines": engines,
                         "passenger_capacity": capacity, "cancellation_policy": rng.choice(POLICIES),
                         "crew": maybe(rng, str(crew)), "d_check_complete": d_check, "moon_clearance_complete": moon,
                         "price": f"${price:,.1f}", "company_id": company["id"]})
        if rng.random() < 0.95:  # not every shuttle has reviews
            reviews.append({"shuttle_id": 10000 + sid, "review_scores_rating": maybe(rng, str(review)),
                            "number_of_reviews": rng.randint(1, 90)})
    for name, rows in (("companies", companies), ("shuttles", shuttles), ("reviews", reviews)):
        with open(DATA / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"wrote {DATA.relative_to(HERE.parent.parent)}: {len(companies)} companies, {len(shuttles)} shuttles, "
          f"{len(reviews)} reviews")


if __name__ == "__main__":
    main()

"""Generate the penguins example's data, in the shape of the TFX "penguin" example's: data/penguins.csv
(labelled: species and four measurements; a few values missing, as in the Palmer Penguins data)
and data/new_penguins.csv (unlabelled rows, for batch scoring, as TFX's BulkInferrer gets).

Class means and spreads follow the Palmer Penguins data (Gorman et al. 2014); the rows are
drawn, deterministically (seeded), standard library only. Run from anywhere:
    python examples/penguins/make_data.py
"""
import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
# species: (count, (mean, sd) of culmen length mm, culmen depth mm, flipper length mm, body mass g)
SPECIES = {
    "Adelie": (146, ((38.8, 2.7), (18.3, 1.2), (190.0, 6.5), (3700.0, 460.0))),
    "Chinstrap": (68, ((48.8, 3.3), (18.4, 1.1), (196.0, 7.1), (3733.0, 384.0))),
    "Gentoo": (119, ((47.5, 3.1), (15.0, 1.0), (217.0, 6.5), (5076.0, 504.0))),
}
COLUMNS = ["culmen_length_mm", "culmen_depth_mm", "flipper_length_mm", "body_mass_g"]
N_NEW = 60


def draw(rng, stats) -> list:
    (cl, cls), (cd, cds), (fl, fls), (bm, bms) = stats
    return [round(rng.gauss(cl, cls), 1), round(rng.gauss(cd, cds), 1), round(rng.gauss(fl, fls)),
            round(rng.gauss(bm, bms) / 25) * 25]


def main():
    rng = random.Random(42)
    DATA.mkdir(parents=True, exist_ok=True)
    labelled = []
    for species, (count, stats) in SPECIES.items():
        labelled += [[species] + draw(rng, stats) for _ in range(count)]
    rng.shuffle(labelled)
    for row in rng.sample(labelled, 4):  # a few missing measurements, dropped by the transform
        row[1 + rng.randrange(4)] = ""
    new = []
    for _ in range(N_NEW):
        species = rng.choice(list(SPECIES))
        new.append(draw(rng, SPECIES[species][1]))
    with open(DATA / "penguins.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["penguin_id", "species"] + COLUMNS)
        writer.writerows([i + 1] + row for i, row in enumerate(labelled))
    with open(DATA / "new_penguins.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["penguin_id"] + COLUMNS)
        writer.writerows([9001 + i] + row for i, row in enumerate(new))
    print(f"wrote {DATA.relative_to(HERE.parent.parent)}: {len(labelled)} labelled penguins, {len(new)} new ones")


if __name__ == "__main__":
    main()

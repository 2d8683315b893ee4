"""The TFX penguin example's module file, as dagsmith user code: the Transform's
preprocessing_fn (here: drop incomplete rows, mass in kg) and the Trainer's run_fn (here: a
scikit-learn pipeline that scales the four measurements and fits a logistic regression; the
scaler travels inside the model, as TFX's transform graph travels with its serving model)."""

import pandas as pd

MEASUREMENTS = ["culmen_length_mm", "culmen_depth_mm", "flipper_length_mm", "body_mass_kg"]


def preprocessing_fn(frames: dict) -> pd.DataFrame:
    """The one input table (labelled or new penguins), complete rows only, body mass in kg."""
    (frame,) = frames.values()
    frame = frame.dropna(subset=["culmen_length_mm", "culmen_depth_mm", "flipper_length_mm", "body_mass_g"])
    frame = frame.assign(body_mass_kg=frame["body_mass_g"] / 1000.0).drop(columns=["body_mass_g"])
    return frame.sort_values("penguin_id", kind="mergesort").reset_index(drop=True)


def run_fn(train: pd.DataFrame, test: pd.DataFrame, params: dict, context):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=float(params.get("C", 1.0)), max_iter=1000))
    return model.fit(train[context.features], train[context.target])

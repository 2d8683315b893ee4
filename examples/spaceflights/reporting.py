"""Kedro spaceflights' reporting node, as a dagsmith custom step: it reads a pipeline table and
writes one, both declared in pipeline.yaml (steps.capacity_report.inputs / outputs)."""

from dagsmith import step


def passenger_capacity_by_type():
    shuttles = step.read_table("preprocessed_shuttles")
    report = (shuttles.groupby("shuttle_type", as_index=False)["passenger_capacity"].mean()
              .rename(columns={"passenger_capacity": "mean_passenger_capacity"})
              .sort_values("shuttle_type", kind="mergesort"))
    step.write_table("passenger_capacity_by_type", report)

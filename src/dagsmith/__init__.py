"""dagsmith: compile one YAML ML pipeline spec to Airflow, Argo Workflows or AWS Step Functions,
or run it locally."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Loaded on first use, so `import dagsmith` stays light (no pandas, no scikit-learn).
    if name == "load_model":
        from .model import load_model

        return load_model
    raise AttributeError(f"module 'dagsmith' has no attribute {name!r}")

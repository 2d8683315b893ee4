"""dagsmith: compile one YAML ML pipeline spec to Airflow, Argo Workflows or AWS Step Functions,
or run it locally."""

__version__ = "0.1.0"

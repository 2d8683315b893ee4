"""The Airflow backend: `backend` writes a DAG file from the IR and the plan; `tasks` is what the
generated DAG's tasks call inside the Airflow worker (kept apart so a worker never imports the
emitter)."""

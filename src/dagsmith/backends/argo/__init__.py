"""The Argo Workflows backend: `workflow` (WorkflowTemplate, CronWorkflow), `events` (Argo Events
EventSource and Sensor for `on_new_data`), `backend` (emit), `deploy` (the Argo Server API)."""

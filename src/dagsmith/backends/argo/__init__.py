"""The Argo Workflows backend: `workflow` (WorkflowTemplate, CronWorkflow), `events` (Argo Events
EventSource and Sensor for `on_new_data`, as data), `access` (the prerequisites: service accounts,
Roles, EventBus), `hera_models` (Hera's models without its DSL), `backend` (emit), `deploy` (the
Argo Server API)."""

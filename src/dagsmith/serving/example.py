"""The example `/predict` request that `dagsmith serve --help` and docs/serving.md show: one
customer with the feature columns of examples/churn's model (the `churn_features` columns it
is trained on: the key `customer_id` and the target `churned` are not model inputs).

tests/serving/test_example_request.py checks that docs/serving.md shows this same body and that
a server of the real churn model answers it with 200. Kept free of imports: the CLI reads it
only to print its help.
"""

from __future__ import annotations

CHURN_ROW = {
    "tenure_months": 12,
    "age": 31,
    "monthly_price": 19,
    "annual_billing": 0,
    "recent_sessions": 4,
    "recent_minutes": 35.5,
    "recent_purchases": 0,
    "lifetime_sessions": 40,
    "support_tickets": 1,
    "days_since_last_event": 3,
}


def request_body() -> dict:
    return {"rows": [dict(CHURN_ROW)]}


def curl_command(url: str = "localhost:8080") -> str:
    import json

    return f"curl -s {url}/predict -d '{json.dumps(request_body())}'"

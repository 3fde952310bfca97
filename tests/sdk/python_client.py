"""analytics-python with gzip=True posting to TrackLayer's /v1 (run by tests/sdk/run.sh)."""
import os
import sys

from segment.analytics.client import Client

errors = []
client = Client(
    write_key=os.environ["WRITE_KEY"],
    host=os.environ["TRACKLAYER_HOST"],
    gzip=True,
    sync_mode=True,  # each call is posted before it returns, so failures surface here
    max_retries=0,
    on_error=lambda error, batch: errors.append(repr(error)),
)
run = os.environ["RUN"]
client.identify(
    user_id=f"{run}-py-user",
    traits={"email": "py.user@example.com", "phone": "0612345678", "firstName": "Py"},
    message_id=f"{run}-python-identify",
)
client.track(
    user_id=f"{run}-py-user",
    event="Order Completed",
    properties={
        "order_id": f"{run}-PY-1",
        "revenue": 42.5,
        "currency": "EUR",
        "products": [{"product_id": "SKU-1", "price": 42.5, "quantity": 1}],
    },
    message_id=f"{run}-python-purchase",
)
client.track(
    user_id=f"{run}-py-user",
    event="Signed Up",
    properties={"plan": "pro"},
    message_id=f"{run}-python-signup",
)
if errors:
    print("analytics-python reported:", *errors, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print("analytics-python: 3 calls posted with gzip")

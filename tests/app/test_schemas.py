"""The OpenAPI schema says the shapes of rows and targets, while the service validates them
against the meta-model itself."""

from __future__ import annotations

from app.core.config import Settings
from app.main import create_app
from app.schemas import Examples


def test_rows_and_targets_are_typed_in_the_schema():
    schema = create_app(Settings()).openapi()["components"]["schemas"]
    for body, field in (("Examples", "x"), ("PredictIn", "x")):
        rows = schema[body]["properties"][field]
        kinds = [option["type"] for option in rows["items"]["anyOf"]]
        assert rows["type"] == "array" and kinds == ["number", "array", "string", "object"]
    targets = schema["Examples"]["properties"]["y"]["items"]["anyOf"]
    assert [option["type"] for option in targets] == ["number", "array", "string"]


def test_validation_stays_the_services_own():
    # Anything list-shaped passes the schema model: the service's 422s name what fits the model.
    body = Examples(x=[[1, 2], "png", {"a": 1.0}, 3], y=["a", 1, [0.5]])
    assert body.x[1] == "png" and body.y[2] == [0.5]

"""A model's declared DP guarantee (metadata ``dp: {epsilon, delta}``): accepted, stored, refused by field when bad."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.backend.test_models_api import app, assert_error, files, upload  # noqa: F401
from tests.backend.upload_fixtures import tiny_metadata


def test_dp_claim_is_stored_and_a_bad_one_is_named(app, client: TestClient, files) -> None:  # noqa: F811
    r = upload(client, files["torchscript"], tiny_metadata() | {"dp": {"epsilon": 1.0, "delta": 1e-5}})
    assert r.status_code == 201, r.text
    assert r.json()["metadata"]["dp"] == {"epsilon": 1.0, "delta": 1e-5}
    bad = assert_error(upload(client, files["torchscript"], tiny_metadata() | {"dp": {"epsilon": -1}}),
                       422, "invalid_metadata")
    assert bad["details"][0]["field"] == "metadata.dp.epsilon"
    unknown = assert_error(upload(client, files["torchscript"], tiny_metadata() | {"dp": {"eps": 1}}),
                           422, "invalid_metadata")
    assert {d["field"] for d in unknown["details"]} >= {"metadata.dp.eps"}

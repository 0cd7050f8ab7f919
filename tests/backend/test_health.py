"""Liveness, readiness, authentication basics and the error body shape."""

from __future__ import annotations


def test_health_and_ready_need_no_token(anonymous_client) -> None:  # type: ignore[no-untyped-def]
    assert anonymous_client.get("/health").json() == {"status": "ok"}
    ready = anonymous_client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["database"] is True and ready.json()["mode"] == "embedded"


def test_missing_token_gives_the_error_body(anonymous_client) -> None:  # type: ignore[no-untyped-def]
    response = anonymous_client.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert set(response.json()["error"]) == {"code", "message", "details"}


def test_bearer_and_browser_session(anonymous_client, tokens, client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/v1/auth/me").json()["name"] == "alice"
    assert anonymous_client.post("/api/v1/auth/sign-in", json={"token": "bmia_wrong"}).status_code == 401
    signed = anonymous_client.post("/api/v1/auth/sign-in", json={"token": tokens["alice"]})
    assert signed.status_code == 200
    assert anonymous_client.get("/api/v1/auth/me").json()["name"] == "alice"  # the cookie
    assert anonymous_client.post("/api/v1/auth/sign-out").status_code == 403  # no CSRF token
    headers = {"X-CSRF-Token": signed.json()["csrf_token"]}
    assert anonymous_client.post("/api/v1/auth/sign-out", headers=headers).status_code == 204
    assert anonymous_client.get("/api/v1/auth/me").status_code == 401

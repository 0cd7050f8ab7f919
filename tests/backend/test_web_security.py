"""CSRF, sessions and security headers, tried as an attacker would (in-process app, TestClient).

The attacker's page runs on another port of the same host (same site, so ``SameSite=Strict``
lets the victim's cookie through) and cannot read the victim's pages: it knows neither the
victim's CSRF token nor the session id, but it may hold tokens and cookies of its own.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.db.models import ApiToken, BrowserSession, utcnow
from backend.db.session import session_scope
from backend.settings import Settings

EVIL = {"Origin": "http://testserver:8666"}  # another port of the same host
TOKENS = "/api/v1/admin/tokens"


def meta_csrf(client: TestClient, path: str = "/") -> str:
    """The CSRF token a page hands its scripts (``<meta name="csrf-token">``)."""
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get(path).text)
    return found.group(1) if found else ""


def form_csrf(client: TestClient) -> str:
    """The sign-in form's CSRF token ("" when it has none: the post then decides)."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/sign-in").text)
    return found.group(1) if found else ""


def signed_in(app: Any, token: str, **client_options: Any) -> TestClient:
    """A browser signed in through the form, as a person does."""
    browser = TestClient(app, **client_options)
    done = browser.post("/sign-in", data={"token": token, "csrf_token": form_csrf(browser)}, follow_redirects=False)
    assert done.status_code == 303, done.text
    return browser


def assert_csrf_refused(response: Any) -> None:
    assert response.status_code == 403, response.text
    assert set(response.json()["error"]) == {"code", "message", "details"}
    assert response.json()["error"]["code"] == "csrf_failed"


def token_id(app: Any, name: str) -> str:
    with session_scope(app.state.sessionmaker) as db:
        return db.query(ApiToken).filter_by(name=name).one().id


# ---------------------------------------------------------------- CSRF


def test_cookie_authenticated_api_calls_need_the_pages_token(app: Any, tokens: dict[str, str]) -> None:
    victim = signed_in(app, tokens["admin"])
    # what a page on another port can make the victim's browser send: the cookie, no token
    assert_csrf_refused(victim.post(TOKENS, json={"name": "attacker"}, headers=EVIL))
    assert_csrf_refused(victim.post(TOKENS, json={"name": "attacker"}))  # no Origin at all: still no token
    assert_csrf_refused(victim.post(TOKENS, json={"name": "x"}, headers={"X-CSRF-Token": "0" * 64}))
    # a model upload, a cancel, a delete: refused before anything is looked up or stored
    assert_csrf_refused(victim.post("/api/v1/models", files={"file": ("m.pt", b"x")}, headers=EVIL))
    assert_csrf_refused(victim.post("/api/v1/assessments/0123/cancel", headers=EVIL))
    assert_csrf_refused(victim.delete("/api/v1/scan-sets/0123"))
    # the token stolen... from the attacker's own session is not the victim's
    attacker = signed_in(app, tokens["alice"])
    assert_csrf_refused(victim.post(TOKENS, json={"name": "x"}, headers={"X-CSRF-Token": meta_csrf(attacker)}))
    # even the right token is refused from another origin (Origin, else Referer)
    mine = {"X-CSRF-Token": meta_csrf(victim)}
    assert_csrf_refused(victim.post(TOKENS, json={"name": "x"}, headers=mine | EVIL))
    assert_csrf_refused(victim.post(TOKENS, json={"name": "x"}, headers=mine | {"Referer": "http://testserver:8666/a"}))
    assert_csrf_refused(victim.post(TOKENS, json={"name": "x"}, headers=mine | {"Origin": "null"}))
    with session_scope(app.state.sessionmaker) as db:
        assert db.query(ApiToken).count() == 3  # nothing was created
    # the dashboard's own call: the page's token, from the page's origin
    ok = victim.post(TOKENS, json={"name": "officer"}, headers=mine | {"Origin": "http://testserver"})
    assert ok.status_code == 201, ok.text
    assert victim.get("/api/v1/assessments", headers=EVIL).status_code == 200  # reads are not state changes


def test_bearer_token_calls_are_unaffected(admin_client: TestClient) -> None:
    assert admin_client.post(TOKENS, json={"name": "ci"}).status_code == 201
    assert admin_client.post(TOKENS, json={"name": "ci2"}, headers=EVIL).status_code == 201


def test_login_csrf_cannot_sign_the_victim_in_as_the_attacker(app: Any, tokens: dict[str, str]) -> None:
    attacker = TestClient(app)
    attacker_csrf = form_csrf(attacker)  # a valid token, of the attacker's own pre-session
    victim = TestClient(app)
    victim.get("/sign-in")  # the victim has a pre-session cookie of its own
    form = {"token": tokens["mallory"], "next": "/"}
    assert_csrf_refused(victim.post("/sign-in", data=form, headers=EVIL, follow_redirects=False))
    assert_csrf_refused(victim.post("/sign-in", data=form, follow_redirects=False))
    assert_csrf_refused(victim.post("/sign-in", data=form | {"csrf_token": attacker_csrf}, follow_redirects=False))
    assert_csrf_refused(TestClient(app).post("/sign-in", data=form | {"csrf_token": attacker_csrf}))  # no cookie
    # the JSON sign-in: another site's form can send neither JSON nor a same-origin Origin
    assert_csrf_refused(victim.post("/api/v1/auth/sign-in", content=f'{{"token": "{tokens["mallory"]}"}}',
                                    headers={"Content-Type": "text/plain"}))
    assert_csrf_refused(victim.post("/api/v1/auth/sign-in", json={"token": tokens["mallory"]}, headers=EVIL))
    assert victim.get("/api/v1/auth/me").status_code == 401  # still nobody
    assert victim.get("/", follow_redirects=False).status_code == 303


def test_sign_out_needs_the_token(app: Any, tokens: dict[str, str]) -> None:
    victim = signed_in(app, tokens["alice"])
    assert_csrf_refused(victim.post("/sign-out", headers=EVIL, follow_redirects=False))
    assert_csrf_refused(victim.post("/api/v1/auth/sign-out"))
    assert victim.get("/api/v1/auth/me").json()["name"] == "alice"


# ---------------------------------------------------------------- sessions


def test_a_copied_cookie_stops_working_after_sign_out(app: Any, tokens: dict[str, str]) -> None:
    victim = signed_in(app, tokens["alice"])
    thief = TestClient(app, cookies={"session": victim.cookies["session"]})
    assert thief.get("/api/v1/auth/me").json()["name"] == "alice"
    out = victim.post("/sign-out", data={"csrf_token": meta_csrf(victim)}, follow_redirects=False)
    assert out.status_code == 303
    assert thief.get("/api/v1/auth/me").status_code == 401
    assert thief.get("/models", follow_redirects=False).status_code == 303
    with session_scope(app.state.sessionmaker) as db:
        assert db.query(BrowserSession).count() == 0


def test_revoking_the_token_ends_its_sessions(app: Any, tokens: dict[str, str], admin_client: TestClient) -> None:
    alice = signed_in(app, tokens["alice"])
    other = signed_in(app, tokens["admin"])
    assert admin_client.delete(f"{TOKENS}/{token_id(app, 'alice')}").status_code == 204
    assert alice.get("/api/v1/auth/me").status_code == 401
    assert alice.get("/", follow_redirects=False).status_code == 303
    assert other.get("/api/v1/auth/me").status_code == 200
    assert admin_client.delete(f"{TOKENS}/{token_id(app, 'mallory')}").status_code == 404  # another organisation
    assert admin_client.delete(f"{TOKENS}/a%00b").status_code == 422
    assert TestClient(app, headers={"Authorization": f"Bearer {tokens['alice']}"}).get("/api/v1/auth/me").status_code == 401


def test_sessions_expire_server_side_and_ids_change_at_sign_in(app: Any, tokens: dict[str, str]) -> None:
    browser = TestClient(app)
    pre = form_csrf(browser)
    before = browser.cookies["session"]
    browser.post("/sign-in", data={"token": tokens["alice"], "csrf_token": pre}, follow_redirects=False)
    assert browser.cookies["session"] != before and meta_csrf(browser) != pre  # no fixation
    with session_scope(app.state.sessionmaker) as db:
        row = db.query(BrowserSession).one()
        assert timedelta(hours=11.9) < row.expires_at - row.created_at <= timedelta(hours=12)
        row.expires_at = utcnow() - timedelta(seconds=1)
    assert browser.get("/api/v1/auth/me").status_code == 401  # the signed cookie alone is not enough


def _set_cookie(response: Any) -> str:
    cookie = [v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("session=")]
    assert cookie, "no session cookie set"
    return cookie[0].lower()


def _sign_in_cookie(app: Any, token: str, base_url: str = "http://testserver", **headers: str) -> str:
    browser = TestClient(app, base_url=base_url)
    response = browser.post("/api/v1/auth/sign-in", json={"token": token}, headers=headers)
    assert response.status_code == 200, response.text
    return _set_cookie(response)


def test_cookie_flags_default(app: Any, tokens: dict[str, str]) -> None:
    plain = _sign_in_cookie(app, tokens["alice"])
    assert "httponly" in plain and "samesite=strict" in plain and "max-age=43200" in plain
    assert "secure" not in plain
    assert "secure" in _sign_in_cookie(app, tokens["alice"], "https://testserver")
    # anyone can send X-Forwarded-Proto: believed only from a trusted proxy
    assert "secure" not in _sign_in_cookie(app, tokens["alice"], **{"X-Forwarded-Proto": "https"})


def _app_and_admin(tmp_path: Any, **settings: Any) -> tuple[Any, str]:
    """An app (no job machinery) with ``settings`` and an administrator token."""
    from backend.auth import create_token

    app = create_app(Settings(data_dir=tmp_path / "data", session_secret="s", **settings), start_jobs=False)
    with session_scope(app.state.sessionmaker) as db:
        return app, create_token(db, "admin", admin=True)


@pytest.mark.parametrize("extra", [{"trusted_proxies": ["testclient"]}, {"session_cookie_secure": True}])
def test_cookie_secure_behind_a_trusted_proxy_or_when_configured(tmp_path: Any, extra: dict[str, Any]) -> None:
    app, token = _app_and_admin(tmp_path, session_lifetime_h=2, **extra)
    cookie = _sign_in_cookie(app, token, **{"X-Forwarded-Proto": "https"})
    assert "secure" in cookie and "max-age=7200" in cookie


def test_trusted_origins_may_post_others_may_not(tmp_path: Any) -> None:
    app, token = _app_and_admin(tmp_path, trusted_origins=["https://brainmia.example.org"])
    browser = signed_in(app, token)
    mine = {"X-CSRF-Token": meta_csrf(browser)}
    ok = browser.post(TOKENS, json={"name": "a"}, headers=mine | {"Origin": "https://brainmia.example.org"})
    assert ok.status_code == 201, ok.text
    assert_csrf_refused(browser.post(TOKENS, json={"name": "b"}, headers=mine | {"Origin": "https://evil.example.org"}))
    assert_csrf_refused(browser.post(TOKENS, json={"name": "c"}, headers=mine | {"Origin": "http://brainmia.example.org"}))


# ---------------------------------------------------------------- headers


def _policy(response: Any) -> dict[str, str]:
    return {part.strip().split(" ", 1)[0]: part.strip() for part in response.headers["content-security-policy"].split(";")}


@pytest.mark.parametrize("path", ["/sign-in", "/", "/models", "/scan-sets", "/assessments/new", "/compare"])
def test_pages_send_a_nonce_policy_and_no_framing(app: Any, tokens: dict[str, str], path: str) -> None:
    page = signed_in(app, tokens["alice"]).get(path)
    assert page.status_code == 200
    policy = _policy(page)
    assert policy["frame-ancestors"] == "frame-ancestors 'none'"
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
    nonce = re.search(r"'nonce-([^']+)'", policy["script-src"]).group(1)
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    for tag in re.findall(r"<script\b[^>]*>", page.text):  # every inline script carries this response's nonce
        assert "src=" in tag or 'type="application/json"' in tag or f'nonce="{nonce}"' in tag, tag
    again = _policy(signed_in(app, tokens["alice"]).get(path))
    assert again["script-src"] != policy["script-src"]  # a new nonce per response


def test_api_and_files_send_the_strict_policy(app: Any, client: TestClient) -> None:
    for response in (client.get("/api/v1/models"), client.get("/static/app.js"), TestClient(app).get("/api/v1/auth/me")):
        assert _policy(response)["default-src"] == "default-src 'none'"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    docs = _policy(client.get("/docs"))  # Swagger UI from its CDN, still not framable
    assert "https://cdn.jsdelivr.net" in docs["script-src"] and docs["frame-ancestors"] == "frame-ancestors 'none'"

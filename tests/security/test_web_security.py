"""Finding 6 and the session / header parts of finding 8, against a real ``brainmia serve``.

The attacker serves a page from another port of the same host: the same site, so the victim's
``SameSite=Strict`` cookie goes along with whatever that page makes the victim's browser send.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.settings import Settings
from tests.conftest import require
from tests.integration.conftest import free_port
from tests.security.conftest import Server


def _form_csrf(browser: httpx.Client, path: str = "/sign-in") -> str:
    """The CSRF token of the form on ``path`` ("" when it has none: the post then decides)."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', browser.get(path).text)
    return found.group(1) if found else ""


def _signed_in(server: Server, token: str) -> httpx.Client:
    """A cookie-carrying client signed in through the sign-in form, as a browser does."""
    browser = httpx.Client(base_url=server.url, timeout=60)
    done = browser.post("/sign-in", data={"token": token, "csrf_token": _form_csrf(browser)})
    assert done.status_code == 303, done.text
    return browser


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "csrf_failed"
    assert set(response.json()["error"]) == {"code", "message", "details"}


def test_cross_site_posts_from_another_port_are_refused(server: Server, org_tokens: dict[str, str]) -> None:
    evil = {"Origin": f"http://127.0.0.1:{free_port()}"}
    victim = _signed_in(server, org_tokens["alpha"])
    _refused(victim.post("/api/v1/models", files={"file": ("evil.pt", b"x")}, data={"kind": "model"}, headers=evil))
    _refused(victim.post("/api/v1/assessments/0123456789abcdef/cancel", headers=evil))
    _refused(victim.post("/api/v1/models", files={"file": ("evil.pt", b"x")}))  # no Origin, no token
    _refused(victim.post("/sign-in", data={"token": org_tokens["beta"], "csrf_token": "0" * 64}, headers=evil))
    _refused(victim.post("/api/v1/auth/sign-in", json={"token": org_tokens["beta"]}, headers=evil))
    assert victim.get("/api/v1/auth/me").json()["name"] == "alpha-user"  # not switched to beta
    with server.client(org_tokens["alpha"]) as api:
        assert api.get("/api/v1/models").json()["total"] == 0


def test_a_copied_cookie_stops_working_after_sign_out(server: Server, org_tokens: dict[str, str]) -> None:
    victim = _signed_in(server, org_tokens["alpha"])
    thief = httpx.Client(base_url=server.url, cookies={"session": victim.cookies["session"]}, timeout=60)
    assert thief.get("/api/v1/auth/me").json()["name"] == "alpha-user"
    assert victim.post("/sign-out", data={"csrf_token": _form_csrf(victim, "/")}).status_code == 303
    assert thief.get("/api/v1/auth/me").status_code == 401
    assert thief.get("/models").status_code == 303  # sent to sign in


def test_pages_and_api_send_csp_and_no_framing(server: Server) -> None:
    with server.client() as anonymous:
        for path in ("/sign-in", "/api/v1/auth/me", "/health"):
            response = anonymous.get(path)
            policy = response.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy, (path, policy)
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
        page = anonymous.get("/sign-in")
        assert re.search(r"script-src 'self' 'nonce-[\w-]+'", page.headers["content-security-policy"])


def _sign_in_cookie(server: Server, token: str) -> str:
    with server.client() as browser:
        response = browser.post("/api/v1/auth/sign-in", json={"token": token}, headers={"X-Forwarded-Proto": "https"})
        assert response.status_code == 200, response.text
        return response.headers["set-cookie"].lower()


def test_cookie_secure_only_from_a_trusted_proxy(server: Server, make_server: Any) -> None:
    cookie = _sign_in_cookie(server, server.admin_token)  # X-Forwarded-Proto from anyone: not believed
    assert "secure" not in cookie and "httponly" in cookie and "max-age=43200" in cookie
    behind_proxy = make_server(trusted_proxies='["127.0.0.1"]', session_lifetime_h=1)
    cookie = _sign_in_cookie(behind_proxy, behind_proxy.admin_token)
    assert "secure" in cookie and "max-age=3600" in cookie


# ---------------------------------------------------------------- in a real browser


@pytest.fixture()
def attacker_site() -> Iterator[tuple[str, dict[str, str]]]:
    """A web server on another port of 127.0.0.1 serving ``pages[path]`` (the attacker's pages)."""
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", pages
    finally:
        httpd.shutdown()


@pytest.fixture()
def chromium(browser: Any) -> Any:
    """The session's headless Chromium (``tests/conftest.py``): Playwright's sync API runs one at a time."""
    return browser


ATTACK_PAGE = """<!DOCTYPE html><title>cute cats</title>
<form id="login" method="post" action="{target}/sign-in">
  <input name="token" value="{token}"><input name="next" value="/api/v1/auth/me"></form>
<script>
(async function () {{
  var upload = new FormData();
  upload.append("file", new Blob(["not really a model"]), "evil.pt");
  upload.append("kind", "model");
  var options = {{ method: "POST", mode: "no-cors", credentials: "include" }};
  await fetch("{target}/api/v1/models", Object.assign({{ body: upload }}, options)).catch(function () {{}});
  await fetch("{target}/api/v1/assessments/{job}/cancel", options).catch(function () {{}});
  document.title = "sent";
  if ({login}) {{ document.getElementById("login").submit(); }}
}})();
</script>"""


def test_a_page_on_another_port_cannot_act_as_the_signed_in_victim(
    server: Server, org_tokens: dict[str, str], chromium: Any, attacker_site: tuple[str, dict[str, str]]
) -> None:
    site, pages = attacker_site
    job = "feedfacefeedfacefeedfacefeedface"
    pages["/upload"] = ATTACK_PAGE.format(target=server.url, token="", job=job, login="false")
    pages["/login"] = ATTACK_PAGE.format(target=server.url, token=org_tokens["beta"], job=job, login="true")
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.url}/sign-in")  # the victim signs in through the real form
        page.fill("#token", org_tokens["alpha"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{server.url}/")
        log_before = len(server.log())

        page.goto(f"{site}/upload")
        page.wait_for_function("document.title === 'sent'")
        answers = server.log()[log_before:]
        assert re.search(r'"POST /api/v1/models HTTP/1.1" 403', answers), answers
        assert re.search(rf'"POST /api/v1/assessments/{job}/cancel HTTP/1.1" 403', answers), answers

        page.goto(f"{site}/login")  # login CSRF: the form would sign the victim in as beta
        page.wait_for_load_state("load")
        page.wait_for_url(f"{server.url}/sign-in")
        assert '"csrf_failed"' in page.content()
        me = context.request.get(f"{server.url}/api/v1/auth/me")
        assert me.json()["name"] == "alpha-user", me.text()
    finally:
        context.close()
    with server.client(org_tokens["alpha"]) as api:
        assert api.get("/api/v1/models").json()["total"] == 0

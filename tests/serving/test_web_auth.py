"""Logging in, tokens, and who may reach which route (the role-by-route matrix)."""

from __future__ import annotations

import pytest
from _web_helpers import HTML, PASSWORD, login, make_app, seed_queue, session_of
from fastapi.testclient import TestClient
from starlette.routing import Mount, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from collection.models import User
from collection.users import authenticate, create_user, issue_token, verify_password, verify_token
from serving.api.deps import SESSION_COOKIE

SECRET = "voiceloop-development-only-secret"  # Settings.session_secret in development
ROLES = ("anonymous", "labeler", "reviewer", "admin", "ops")


def same(code: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, code)


def by_role(anonymous: int, labeler: int, reviewer: int, admin: int, ops: int) -> dict[str, int]:
    return dict(zip(ROLES, (anonymous, labeler, reviewer, admin, ops), strict=True))


# (method, path) -> expected status per role. Pages are requested as a browser does (Accept: text/html):
# anonymous → 303 to /login; API endpoints and audio answer 401. A new route fails
# test_every_route_is_in_the_matrix until it is added here.
MATRIX: dict[tuple[str, str], dict[str, int]] = {
    ("GET", "/openapi.json"): same(200),
    ("GET", "/docs"): same(200),
    ("GET", "/docs/oauth2-redirect"): same(200),
    ("GET", "/redoc"): same(200),
    ("GET", "/static/{path}"): same(200),
    ("GET", "/"): same(200),
    ("GET", "/login"): same(200),
    ("POST", "/login"): same(401),  # wrong password, whoever asks
    ("POST", "/logout"): same(303),
    ("POST", "/api/token"): same(200),  # right password
    ("GET", "/api/me"): by_role(401, 200, 200, 200, 200),
    ("GET", "/record"): same(200),  # public: volunteers have no account
    ("POST", "/record/consent"): same(422),  # an empty form
    ("POST", "/record/prompt"): same(401),  # no contributor token (a staff login is not one)
    ("POST", "/record/upload"): same(401),
    ("GET", "/label"): by_role(303, 200, 403, 403, 403),
    ("GET", "/api/label/next"): by_role(401, 200, 403, 403, 403),
    ("POST", "/label/{task_id}"): by_role(303, 303, 403, 403, 403),  # the labeler's 303 is "saved, next task"
    ("GET", "/guidelines"): by_role(303, 200, 200, 200, 200),
    ("GET", "/audio/{recording_id}"): by_role(401, 200, 200, 200, 403),  # the labeler holds its task
    ("GET", "/review"): by_role(303, 403, 200, 200, 403),
    ("POST", "/review/{label_id}"): by_role(303, 403, 422, 422, 403),  # allowed in, then a bad action
    ("GET", "/admin"): by_role(303, 403, 403, 200, 403),
    ("POST", "/admin/users"): by_role(303, 403, 403, 303, 403),
    ("POST", "/admin/tasks/assign"): by_role(303, 403, 403, 303, 403),
    ("GET", "/healthz"): same(200),
    ("GET", "/readyz"): same(200),
    ("GET", "/metrics"): same(200),
    # The device API takes device keys only: a staff login is not one (401), whatever its role.
    ("POST", "/v1/recognize"): same(401),
    ("GET", "/v1/requests/{request_id}"): same(401),
    ("POST", "/v1/feedback"): same(401),
    ("WS", "/v1/stream"): same(1008),  # the WebSocket close code (policy violation)
    ("POST", "/v1/admin/devices"): by_role(401, 403, 403, 201, 403),
    ("POST", "/v1/admin/devices/{device_id}/rotate"): by_role(401, 403, 403, 404, 403),  # no such device
    ("POST", "/v1/admin/devices/{device_id}/revoke"): by_role(401, 403, 403, 404, 403),
    # The ops dashboard (pages and their JSON): ops and admin only.
    ("GET", "/ops"): by_role(303, 403, 403, 200, 200),
    ("GET", "/ops/drift"): by_role(303, 403, 403, 200, 200),
    ("GET", "/ops/voc"): by_role(303, 403, 403, 200, 200),
    ("GET", "/ops/data"): by_role(303, 403, 403, 200, 200),
    ("GET", "/ops/releases"): by_role(303, 403, 403, 200, 200),
    ("GET", "/ops/api/overview"): by_role(401, 403, 403, 200, 200),
    ("GET", "/ops/api/drift"): by_role(401, 403, 403, 200, 200),
    ("GET", "/ops/api/data"): by_role(401, 403, 403, 200, 200),
    ("GET", "/ops/api/releases"): by_role(401, 403, 403, 200, 200),
    ("PATCH", "/v1/admin/devices/{device_id}/profile"): by_role(401, 403, 403, 404, 403),  # no such device
    # The ops VOC API (JSON): ops and admin only; 422 = allowed in, then an empty body; 404 = no such complaint.
    ("POST", "/ops/api/voc"): by_role(401, 403, 403, 422, 422),
    ("GET", "/ops/api/voc"): by_role(401, 403, 403, 200, 200),
    ("GET", "/ops/api/voc/rate"): by_role(401, 403, 403, 200, 200),
    ("GET", "/ops/api/voc/{feedback_id}"): by_role(401, 403, 403, 404, 404),
    ("POST", "/ops/api/voc/{feedback_id}/triage"): by_role(401, 403, 403, 404, 404),
    ("POST", "/ops/api/voc/{feedback_id}/label"): by_role(401, 403, 403, 404, 404),
    ("POST", "/ops/api/voc/{feedback_id}/status"): by_role(401, 403, 403, 404, 404),
    ("GET", "/ops/api/voc/{feedback_id}/audio/{request_id}"): by_role(401, 403, 403, 404, 404),
}
API = {"/openapi.json", "/api/token", "/api/me", "/api/label/next", "/audio/{recording_id}", "/record/consent",
       "/record/prompt", "/record/upload", "/static/{path}", "/healthz", "/readyz", "/metrics", "/v1/recognize",
       "/v1/requests/{request_id}", "/v1/feedback", "/v1/admin/devices", "/v1/admin/devices/{device_id}/rotate",
       "/v1/admin/devices/{device_id}/revoke", "/ops/api/overview", "/ops/api/drift", "/ops/api/data"}
API |= {"/v1/admin/devices/{device_id}/profile", "/ops/api/voc", "/ops/api/voc/rate", "/ops/api/voc/{feedback_id}",
        "/ops/api/voc/{feedback_id}/triage", "/ops/api/voc/{feedback_id}/label", "/ops/api/voc/{feedback_id}/status",
        "/ops/api/voc/{feedback_id}/audio/{request_id}", "/ops/api/releases"}
JSON_BODIES: dict[tuple[str, str], dict[str, object]] = {
    ("POST", "/v1/feedback"): {"request_id": "req-none", "category": "other"},
    ("POST", "/v1/admin/devices/{device_id}/rotate"): {"overlap_s": 0},
    ("PATCH", "/v1/admin/devices/{device_id}/profile"): {"age_band": "60s"},
    ("POST", "/ops/api/voc/{feedback_id}/status"): {"status": "closed"},
}
BODIES: dict[tuple[str, str], dict[str, object]] = {
    ("POST", "/login"): {"username": "lab", "password": "wrong-password"},
    ("POST", "/api/token"): {"username": "lab", "password": PASSWORD},
    ("POST", "/label/{task_id}"): {"text": "거실 불 켜줘", "flags": ["noise"]},
    ("POST", "/review/{label_id}"): {"action": "maybe"},
    ("POST", "/admin/users"): {"username": "newbie", "role": "labeler", "password": PASSWORD},
    ("POST", "/admin/tasks/assign"): {},
}


def registered_routes(app) -> set[tuple[str, str]]:
    out = set()
    for route in app.routes:
        if isinstance(route, Mount):
            out.add(("GET", f"{route.path}/{{path}}"))
        elif isinstance(route, WebSocketRoute):
            out.add(("WS", route.path))
        else:
            out |= {(m, route.path) for m in route.methods - {"HEAD"}}
    return out


def test_every_route_is_in_the_matrix(tmp_path, catalog_url):
    app = make_app(tmp_path, catalog_url)
    assert registered_routes(app) == set(MATRIX)


def test_role_by_route_matrix(tmp_path, catalog_url, tiny_studio):
    app = make_app(tmp_path, catalog_url)
    seeded = seed_queue(app, tiny_studio)
    with session_of(app) as session:
        ids = {role: session.query(User).filter_by(username=name).one().id
               for role, name in (("labeler", seeded.labeler), ("reviewer", seeded.reviewer),
                                  ("admin", seeded.admin), ("ops", "opsy"))}
    params = {"task_id": seeded.task_id, "recording_id": seeded.recording_id, "label_id": "lbl-none",
              "path": "style.css", "request_id": "req-none", "device_id": "dev-none",
              "feedback_id": "voc-none"}
    failures = []
    for (method, path), expected in MATRIX.items():
        for role in ROLES:
            client = TestClient(app)
            if role != "anonymous":
                client.cookies.set(SESSION_COOKIE, issue_token(ids[role], SECRET))
            if method == "WS":
                got = _websocket_close_code(client, path)
                if got != expected[role]:
                    failures.append(f"WS {path} as {role}: expected close {expected[role]}, got {got}")
                continue
            headers = {} if path in API else HTML
            body = {"json": JSON_BODIES[(method, path)]} if (method, path) in JSON_BODIES else {
                "data": BODIES.get((method, path))}
            if path == "/v1/admin/devices":
                body = {"json": {"device_id": f"dev-{role}"}}
            r = client.request(method, path.format(**params), headers=headers, follow_redirects=False, **body)
            got = r.status_code
            if got != expected[role]:
                failures.append(f"{method} {path} as {role}: expected {expected[role]}, got {got} {r.text[:120]}")
            elif got == 303 and path != "/logout":
                to_login = r.headers["location"].startswith("/login")
                if to_login != (role == "anonymous"):
                    failures.append(f"{method} {path} as {role}: redirected to {r.headers['location']}")
    assert not failures, "\n".join(failures)


def _websocket_close_code(client: TestClient, path: str) -> int | None:
    try:
        with client.websocket_connect(path) as ws:
            ws.receive_json()
    except WebSocketDisconnect as e:
        return e.code
    return None


def test_passwords_and_users(catalog):
    with catalog() as session:
        user = create_user(session, "Alice", "labeler", PASSWORD)
        assert user.username == "alice" and user.password_hash.startswith("scrypt$")
        assert PASSWORD not in user.password_hash and verify_password(PASSWORD, user.password_hash)
        assert create_user(session, "alice", "labeler", "another-password").id == user.id  # idempotent
        with pytest.raises(ValueError, match="already exists with role 'labeler'"):
            create_user(session, "alice", "admin", PASSWORD)
        with pytest.raises(ValueError, match="unknown role 'boss'"):
            create_user(session, "bob", "boss", PASSWORD)
        with pytest.raises(ValueError, match="at least 8"):
            create_user(session, "bob", "admin", "short")
        assert authenticate(session, "ALICE", PASSWORD).id == user.id
        assert authenticate(session, "alice", "wrong-password") is None
        assert authenticate(session, "nobody", PASSWORD) is None
        user.active = False
        assert authenticate(session, "alice", PASSWORD) is None


def test_the_same_user_added_twice_at_once_is_one_user(catalog):
    import threading

    ids: list[str] = []
    barrier = threading.Barrier(2)

    def add() -> None:
        with catalog() as session:
            barrier.wait()
            ids.append(create_user(session, "mina", "labeler", PASSWORD).id)
            session.commit()

    threads = [threading.Thread(target=add) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with catalog() as session:
        (only,) = session.query(User).filter_by(username="mina").all()
    assert ids == [only.id, only.id]


def test_tokens_reject_forgery_expiry_and_other_audiences():
    token = issue_token("usr-1", SECRET)
    assert verify_token(token, SECRET) == "usr-1"
    payload, signature = token.split(".")
    forged = issue_token("usr-admin", "attacker-secret").split(".")[0] + "." + signature
    assert verify_token(forged, SECRET) is None
    assert verify_token(token, "another-secret") is None
    assert verify_token(issue_token("usr-1", SECRET, max_age_s=-1), SECRET) is None
    assert verify_token(issue_token("spk-1", SECRET, audience="contributor"), SECRET) is None
    for garbage in ("", "abc", "a.b.c", "!!!.???", f"{payload}.", f".{signature}", None):
        assert verify_token(garbage, SECRET) is None


def test_login_logout_and_bearer_tokens(tmp_path, catalog_url):
    app = make_app(tmp_path, catalog_url)
    with session_of(app) as session:
        create_user(session, "lab", "labeler", PASSWORD)
        user_id = create_user(session, "rev", "reviewer", PASSWORD).id
        session.commit()
    client = TestClient(app)
    r = client.post("/login", data={"username": "lab", "password": PASSWORD, "next": "//evil.example/x"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/label"  # never an open redirect
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert client.get("/api/me").json()["username"] == "lab"
    client.post("/logout")
    assert client.get("/api/me").status_code == 401

    wrong = client.post("/login", data={"username": "lab", "password": "nope-nope"}, headers=HTML)
    assert wrong.status_code == 401 and "Wrong username or password" in wrong.text

    token = client.post("/api/token", data={"username": "rev", "password": PASSWORD}).json()["access_token"]
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()["role"] == "reviewer"
    assert client.post("/api/token", data={"username": "rev", "password": "nope-nope"}).status_code == 401
    bad_tokens = {"forged": token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
                  "expired": issue_token(user_id, SECRET, max_age_s=-1),
                  "garbage": "not-a-token", "contributor": issue_token(user_id, SECRET, audience="contributor")}
    for name, bad in bad_tokens.items():
        r = client.get("/api/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, name
        assert r.headers["www-authenticate"] == "Bearer"
        # The same token in a browser's cookie sends the browser to the login page.
        page = TestClient(app, cookies={SESSION_COOKIE: bad}).get("/review", headers=HTML, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/review", name


def test_deactivated_user_is_logged_out_at_once(tmp_path, catalog_url):
    app = make_app(tmp_path, catalog_url)
    with session_of(app) as session:
        user = create_user(session, "lab", "labeler", PASSWORD)
        session.commit()
    client = login(TestClient(app), "lab")
    assert client.get("/api/me").status_code == 200
    with session_of(app) as session:
        session.get(User, user.id).active = False
        session.commit()
    assert client.get("/api/me").status_code == 401


def test_audio_only_for_the_assigned_labeler(tmp_path, catalog_url, tiny_studio):
    app = make_app(tmp_path, catalog_url)
    seeded = seed_queue(app, tiny_studio)
    url = f"/audio/{seeded.recording_id}"
    mine = login(TestClient(app), seeded.labeler).get(url)
    assert mine.status_code == 200 and mine.headers["content-type"] == "audio/wav" and mine.content[:4] == b"RIFF"
    other = login(TestClient(app), seeded.other_labeler).get(url)
    assert other.status_code == 403 and "not in a task assigned" in other.json()["detail"]
    assert login(TestClient(app), seeded.reviewer).get("/audio/rec-nope").status_code == 404
    # Seeking (Ctrl+R replays from the start) needs byte ranges.
    part = login(TestClient(app), seeded.reviewer).get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100


def test_cross_site_posts_are_refused(tmp_path, catalog_url):
    """A page on another site cannot make a logged-in browser post here (CSRF); same-site posts and
    clients that send no Origin (API clients, devices) pass."""
    app = make_app(tmp_path, catalog_url)
    with session_of(app) as session:
        create_user(session, "lab", "labeler", PASSWORD)
        session.commit()
    client = TestClient(app)
    login(client, "lab")
    evil = client.post("/logout", headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and "cross-site" in evil.json()["detail"]
    assert client.get("/api/me").status_code == 200  # still logged in: the forged logout did nothing
    forged_login = client.post("/login", data={"username": "lab", "password": PASSWORD},
                               headers={"Referer": "https://evil.example/page"})
    assert forged_login.status_code == 403
    assert client.post("/logout", headers={"Origin": "http://testserver"}).status_code in (200, 303)
    assert client.get("/api/me").status_code == 401

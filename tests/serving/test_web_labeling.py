"""The labeling workbench pages: label, review, admin — against a real catalog and real eSpeak audio."""

from __future__ import annotations

import threading

from _web_helpers import HTML, PASSWORD, login, make_app, seed_queue, session_of
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from collection.models import Label, LabelTask, User


def test_label_page_shows_the_task_prelabel_guidelines_and_shortcuts(tmp_path, catalog_url, tiny_studio):
    app = make_app(tmp_path, catalog_url)
    seeded = seed_queue(app, tiny_studio)
    page = login(TestClient(app), seeded.labeler).get("/label", headers=HTML)
    assert page.status_code == 200
    html = page.text
    assert f'action="/label/{seeded.task_id}"' in html and f'src="/audio/{seeded.recording_id}"' in html
    assert f">{seeded.prelabel}</textarea>" in html
    for flag in ("noise", "unintelligible", "wrong_language"):
        assert f'value="{flag}"' in html
    assert "Ctrl+Enter" in html and "/static/label.js" in html
    assert "<h1>" in html.split('class="guidelines side"')[1]  # the guideline rendered from markdown
    nxt = login(TestClient(app), seeded.labeler).get("/api/label/next").json()["task"]
    assert nxt["task_id"] == seeded.task_id and nxt["prelabel"] == seeded.prelabel
    # Someone else's task: not shown.
    other = login(TestClient(app), seeded.other_labeler).get(f"/label?task={seeded.task_id}", headers=HTML)
    assert other.status_code == 403 and "not assigned" in other.text


def test_submit_stores_one_label_and_a_repeat_is_a_friendly_409(tmp_path, catalog_url, tiny_studio):
    app = make_app(tmp_path, catalog_url)
    seeded = seed_queue(app, tiny_studio)
    client = login(TestClient(app), seeded.labeler)
    form = {"text": "  거실  불 좀 켜줘 ", "flags": ["noise"], "seconds_spent": "12.5"}
    r = client.post(f"/label/{seeded.task_id}", data=form, headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/label?done={seeded.task_id}"
    again = client.post(f"/label/{seeded.task_id}", data=form, headers=HTML)
    assert again.status_code == 409 and "Nothing was lost" in again.text
    bad = client.post(f"/label/{seeded.task_id}", data={"text": "x", "flags": ["boring"]})
    assert bad.status_code in (409, 422)  # the task is done; either way nothing is added
    with session_of(app) as session:
        label = session.scalars(select(Label)).one()
        assert (label.text, label.flags, label.seconds_spent, label.status) == (
            "거실 불 좀 켜줘", ["noise"], 12.5, "submitted")
        assert session.get(LabelTask, seeded.task_id).status == "submitted"


def test_invalid_submissions_are_422(tmp_path, catalog_url, tiny_studio):
    app = make_app(tmp_path, catalog_url)
    seeded = seed_queue(app, tiny_studio)
    client = login(TestClient(app), seeded.labeler)
    assert client.post(f"/label/{seeded.task_id}", data={"text": "   "}).status_code == 422  # empty, no flag
    r = client.post(f"/label/{seeded.task_id}", data={"text": "불 켜", "flags": ["boring"]})
    assert r.status_code == 422 and "unknown flag" in r.json()["detail"]
    assert client.post(f"/label/{seeded.task_id}", data={"text": "불", "seconds_spent": "soon"}).status_code == 422
    assert client.post("/label/tsk-nope", data={"text": "불"}).status_code == 404
    with session_of(app) as session:
        assert session.scalar(select(func.count()).select_from(Label)) == 0


def test_concurrent_submissions_of_one_task_make_one_label(tmp_path, catalog_url, tiny_studio):
    app = make_app(tmp_path, catalog_url)
    seeded = seed_queue(app, tiny_studio)
    clients = [login(TestClient(app), seeded.labeler) for _ in range(2)]
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def send(client: TestClient, text: str) -> None:
        barrier.wait()
        r = client.post(f"/label/{seeded.task_id}", data={"text": text}, follow_redirects=False)
        statuses.append(r.status_code)

    threads = [threading.Thread(target=send, args=(c, t)) for c, t in zip(clients, ("불 켜줘", "불 꺼줘"), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(statuses) == [303, 409]
    with session_of(app) as session:
        assert session.scalar(select(func.count()).select_from(Label)) == 1


def test_review_shows_both_transcripts_with_cer_and_accepts_a_correction(tmp_path, catalog_url, tiny_studio):
    app = make_app(tmp_path, catalog_url)
    seeded = seed_queue(app, tiny_studio, double=True)
    login(TestClient(app), seeded.labeler).post(f"/label/{seeded.task_id}", data={"text": "거실 불 켜줘"})
    second = login(TestClient(app), seeded.other_labeler)
    nxt = second.get("/api/label/next").json()["task"]
    assert nxt["recording_id"] == seeded.recording_id and nxt["round"] == 2 and nxt["prelabel"] is None  # blind
    second.post(f"/label/{nxt['task_id']}", data={"text": "거실 불 꺼줘"})

    reviewer = login(TestClient(app), seeded.reviewer)
    page = reviewer.get("/review", headers=HTML)
    assert page.status_code == 200
    assert "거실 불 켜줘" in page.text and "거실 불 꺼줘" in page.text
    assert "agreement CER 0.20" in page.text  # 1 of 5 letters differs
    with session_of(app) as session:
        first, other = session.scalars(select(Label).order_by(Label.round)).all()
    r = reviewer.post(f"/review/{first.id}", data={"action": "accept", "text": "거실 불 켜 줘", "note": "ok"},
                      follow_redirects=False)
    assert r.status_code == 303
    assert reviewer.post(f"/review/{first.id}", data={"action": "reject"}).status_code == 409  # already decided
    with session_of(app) as session:
        accepted, superseded = session.get(Label, first.id), session.get(Label, other.id)
        assert accepted.status == "reviewed" and accepted.text == "거실 불 켜 줘"
        assert superseded.status == "rejected"
    assert "Nothing waiting for review" in reviewer.get("/review", headers=HTML).text


def test_admin_creates_users_and_assigns_work(tmp_path, catalog_url, tiny_studio):
    app = make_app(tmp_path, catalog_url)
    seeded = seed_queue(app, tiny_studio, recordings=3)
    admin = login(TestClient(app), seeded.admin)
    r = admin.post("/admin/users", data={"username": "newbie", "role": "labeler", "password": PASSWORD},
                   follow_redirects=False)
    assert r.status_code == 303
    bad = admin.post("/admin/users", data={"username": "newbie", "role": "admin", "password": PASSWORD})
    assert bad.status_code == 422 and "already exists" in bad.json()["detail"]
    with session_of(app) as session:  # the new labeler gets work once it is handed out
        for task in session.scalars(select(LabelTask)):
            task.assignee_id = None
        session.commit()
    r = admin.post("/admin/tasks/assign", data={"per_labeler": "1"}, follow_redirects=False)
    assert r.status_code == 303 and "3+assigned" in r.headers["location"]
    with session_of(app) as session:
        newbie = session.scalars(select(User).where(User.username == "newbie")).one()
        assert session.scalar(select(func.count()).select_from(LabelTask).where(
            LabelTask.assignee_id == newbie.id)) == 1
    page = admin.get("/admin", headers=HTML)
    assert page.status_code == 200 and "newbie" in page.text and "synthetic" in page.text
    assert login(TestClient(app), "newbie").get("/label", headers=HTML).status_code == 200

"""The pages in a real headless Chromium (Python Playwright driving the system /usr/bin/chromium).

The app runs under uvicorn in a background thread on a free port, on a SQLite catalog. The fake
microphone plays a real eSpeak clip from the tiny studio (``--use-file-for-fake-audio-capture``), so what
the browser's MediaRecorder uploads (WebM/Opus) is speech that passes QC.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _web_helpers import PASSWORD, make_app, seed_queue, session_of, store_of
from sqlalchemy import select

from collection import labeling
from collection.models import Consent, Label, LabelTask, Recording, Speaker, User
from serving.api.background import serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.browser
if not CHROMIUM.exists():
    pytest.skip("Chromium not installed: apt-get install -y chromium (CI installs it)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (pip install -e .[dev])")


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_studio):
    """(base url, app) of the app served by uvicorn for this module."""
    root = tmp_path_factory.mktemp("web")
    app = make_app(root, f"sqlite:///{root / 'catalog.db'}")
    with serve_in_thread(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def browser(tiny_studio):
    speech = next((tiny_studio / "train").rglob("*.wav"), None) or next(tiny_studio.rglob("*.wav"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={speech}", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def test_recording_flow(site, page):
    url, app = site
    page.goto(f"{url}/record")
    assert page.locator("#record-step").is_hidden()
    for box in page.locator("input[name=checklist]").all():
        box.check()
    page.select_option("select[name=age_band]", "60s")
    page.select_option("select[name=gender]", "male")
    page.select_option("select[name=dialect]", "gyeongsang")
    page.click("#consent-submit")
    prompt = page.locator("#prompt")
    prompt.wait_for(state="visible")
    shown = prompt.inner_text()
    assert shown
    page.click("#record")
    page.wait_for_timeout(2000)
    page.click("#stop")
    page.wait_for_selector("#upload:not([disabled])")
    page.click("#upload")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Saved')")
    assert page.locator("#count").inner_text() == "1"
    assert page.locator("#prompt").inner_text() != shown  # the next prompt

    with session_of(app) as session:
        rec = session.scalars(select(Recording).where(Recording.source == "upload")).one()
        speaker = session.get(Speaker, rec.speaker_id)
        consent = session.get(Consent, speaker.consent_id)
        assert (speaker.persona, speaker.age_band, speaker.gender, speaker.dialect) == (
            "real", "60s", "male", "gyeongsang")
        assert consent.scope_training and consent.scope_human_review and len(consent.checklist) == 4
        assert rec.duration > 1.0 and rec.qc["original_sample_rate"] == 48000  # Opus from the browser
        assert rec.plan == "tiny" and rec.environment and rec.device == "browser"
        assert store_of(app).exists(rec.sha256)


def _log_in(page, url: str, username: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")


def test_labeling_flow_with_keyboard_shortcuts(site, page, tiny_studio):
    url, app = site
    seeded = seed_queue(app, tiny_studio)
    _log_in(page, url, seeded.labeler)
    page.wait_for_url(f"{url}/label")
    text = page.locator("#text")
    assert text.input_value() == seeded.prelabel
    page.evaluate("window.__stillHere = true")
    player = page.locator("#player")
    player.evaluate("a => new Promise(r => a.readyState >= 1 ? r() : a.addEventListener('loadedmetadata', r))")
    page.keyboard.press("Control+Space")
    page.wait_for_function("!document.getElementById('player').paused")
    page.keyboard.press("Control+Space")
    page.wait_for_function("document.getElementById('player').paused")
    page.keyboard.press("Control+r")  # replays instead of reloading
    assert page.evaluate("window.__stillHere") is True
    text.fill("거실 불 좀 켜 줘")
    page.keyboard.press("Alt+1")
    assert page.locator("#flag-noise").is_checked()
    page.keyboard.press("Alt+2")
    page.keyboard.press("Alt+2")  # toggles back off
    assert not page.locator("#flag-unintelligible").is_checked()
    page.keyboard.press("Control+Enter")
    page.wait_for_url(f"{url}/label?done={seeded.task_id}")
    assert "Saved" in page.content()

    with session_of(app) as session:
        label = session.scalars(select(Label).where(Label.task_id == seeded.task_id)).one()
        assert (label.text, label.flags, label.status) == ("거실 불 좀 켜 줘", ["noise"], "submitted")
        assert label.seconds_spent is not None and label.seconds_spent > 0


def test_reviewer_accepts_on_review_page(site, page, tiny_studio):
    url, app = site
    seeded = seed_queue(app, tiny_studio)  # idempotent: the same queue as the labeling test
    with session_of(app) as session:
        task = session.get(LabelTask, seeded.task_id)
        if task.status == "open":  # run alone: submit it the way the labeling page would
            user = session.scalars(select(User).where(User.username == seeded.labeler)).one()
            labeling.submit(session, task.id, user, "거실 불 좀 켜 줘", flags=["noise"])
            session.commit()
        label_id = session.scalars(select(Label.id).where(Label.task_id == seeded.task_id)).one()
    _log_in(page, url, seeded.reviewer)
    page.wait_for_url(f"{url}/review")
    form = page.locator(f"form[data-label='{label_id}']")
    assert form.locator("textarea").input_value() == "거실 불 좀 켜 줘"
    form.locator("button[value=accept]").click()
    page.wait_for_url(f"{url}/review?done={label_id}")
    with session_of(app) as session:
        label = session.get(Label, label_id)
        assert label.status == "reviewed" and label.reviewer_id is not None

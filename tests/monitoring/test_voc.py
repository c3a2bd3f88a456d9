"""VOC on a real catalog: intake from devices and ops, causes, the workflow, labeling, the rate per slice."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pytest
import soundfile as sf
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from collection import labeling
from collection.consent import grant_device_consent, record_production
from collection.models import Feedback, FeedbackEvent, FeedbackUtterance, LabelTask, ProductionUtterance, utcnow
from collection.users import create_user
from monitoring import voc, voc_queries
from monitoring.timerange import MonitoringError
from monitoring.voc import TriageConfig
from serving.devices import register_device

PASSWORD = "correct-horse-battery"


def command_wav(seed: int = 0) -> bytes:
    """1.2 s of a voiced-like tone between quiet edges (passes QC); ``seed`` makes it unique."""
    t = np.arange(int(1.2 * 16000)) / 16000
    wav = 0.3 * np.sin(2 * np.pi * (180 + 7 * seed) * t) * ((t > 0.2) & (t < 1.0))
    wav = wav + 1e-3 * np.random.default_rng(seed).standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, wav.astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def served(session, request_id: str, device_id: str, *, at=None, store=None, **features) -> ProductionUtterance:
    """A served request as serving records it (audio kept when the device's consent allows)."""
    row = record_production(session, store, request_id=request_id, device_id=device_id,
                            audio=command_wav(len(request_id)) if store is not None else None,
                            hypothesis="거실 불 켜 줘", confidence=features.pop("confidence", 0.9), latency_ms=12.0,
                            model_version="3", language="ko")
    defaults = {"in_grammar": True, "snr_db": 30.0, "speech_dbfs": -20.0, "duration_s": 1.2, "channel": "http"}
    for name, value in {**defaults, **features}.items():
        setattr(row, name, value)
    row.created_at = at or utcnow()
    session.flush()
    return row


def voc_count(**labels: str) -> float:
    return REGISTRY.get_sample_value("voiceloop_voc_total", labels) or 0.0


def test_device_intake_links_snapshots_tags_and_is_idempotent(catalog):
    with catalog() as s:
        register_device(s, "kitchen-01", "speaker-mini", profile={"region": "gyeongsang", "age_band": "70s+",
                                                                   "environment": "tv"})
        register_device(s, "other-01")
        served(s, "req-bad", "kitchen-01", confidence=0.31, snr_db=4.0, in_grammar=False, ended_by="max_seconds",
               channel="ws")
        served(s, "req-other", "other-01")
        before = voc_count(source="device", category="misrecognized", slice_key="dialect", slice_value="gyeongsang")

        fb, created = voc.intake_device_feedback(s, device_id="kitchen-01", request_id="req-bad",
                                                 category="misrecognized", text="불 켜랬는데 <b>티비</b>가")
        s.commit()
        assert created and fb.status == "new" and fb.source == "device"
        assert fb.causes == ["low_confidence", "low_snr", "out_of_grammar", "endpoint_cutoff",
                             "slice:dialect=gyeongsang", "slice:age_band=70s+"]
        assert fb.priority == 30 + 10 + 5 + 10 + 10 + 15 + 15
        assert (fb.dialect, fb.age_band, fb.environment, fb.device_type) == ("gyeongsang", "70s+", "tv", "speaker-mini")
        assert fb.occurred_at is not None and fb.text == "불 켜랬는데 <b>티비</b>가"
        (link,) = s.scalars(select(FeedbackUtterance)).all()
        assert (link.feedback_id, link.request_id) == (fb.id, "req-bad")
        (event,) = s.scalars(select(FeedbackEvent)).all()
        assert (event.from_status, event.to_status, event.actor) == (None, "new", "device:kitchen-01")
        after = voc_count(source="device", category="misrecognized", slice_key="dialect", slice_value="gyeongsang")
        assert after == before + 1

        again, created = voc.intake_device_feedback(s, device_id="kitchen-01", request_id="req-bad",
                                                    category="misrecognized", text="불 켜랬는데 <b>티비</b>가")
        assert not created and again.id == fb.id  # a retried POST is the same complaint
        other, created = voc.intake_device_feedback(s, device_id="kitchen-01", request_id="req-bad",
                                                    category="wrong_action")
        assert created and other.id != fb.id
        for rid in ("req-other", "req-nope"):  # another device's request, an unknown one: the same answer
            with pytest.raises(MonitoringError, match="no request") as e:
                voc.intake_device_feedback(s, device_id="kitchen-01", request_id=rid, category="other")
            assert e.value.code == "not_found"
        with pytest.raises(MonitoringError, match="unknown category 'angry'; valid"):
            voc.intake_device_feedback(s, device_id="kitchen-01", request_id="req-bad", category="angry")
        with pytest.raises(MonitoringError, match="at most 2000"):
            voc.intake_device_feedback(s, device_id="kitchen-01", request_id="req-bad", category="other",
                                       text="x" * 2001)
        s.commit()
        assert s.scalar(select(func.count()).select_from(Feedback)) == 2


def test_causes_follow_the_thresholds():
    cfg = TriageConfig(low_confidence=0.5, low_snr_db=8.0, endpoint_min_s=1.0)
    fine = ProductionUtterance(confidence=0.9, snr_db=20.0, in_grammar=True, ended_by="client", duration_s=0.4)
    assert voc.utterance_causes(fine, cfg) == []
    short_endpoint = ProductionUtterance(confidence=0.49, snr_db=7.9, in_grammar=None, ended_by="endpoint",
                                         duration_s=0.8)
    assert voc.utterance_causes(short_endpoint, cfg) == ["low_confidence", "low_snr", "endpoint_cutoff"]
    unknown = ProductionUtterance()  # nothing measured (an old row): no guesses
    assert voc.utterance_causes(unknown, cfg) == []
    assert voc.slice_causes("standard", "40s") == [] and voc.slice_causes(None, None) == []
    assert voc.slice_causes("jeolla", "60s") == ["slice:dialect=jeolla", "slice:age_band=60s"]


def test_ops_complaint_links_the_devices_utterances_around_its_time(catalog):
    now = utcnow()
    t = now - timedelta(hours=2)
    with catalog() as s:
        register_device(s, "tv-7", "tv", profile={"region": "jeolla"})
        register_device(s, "tv-8", "tv")
        for name, minutes in (("early", -15), ("before", -9), ("at", 0), ("after", 9), ("late", 11)):
            served(s, f"req-{name}", "tv-7", at=t + timedelta(minutes=minutes))
        served(s, "req-neighbour", "tv-8", at=t)
        fb = voc.log_complaint(s, device_id="tv-7", occurred_at=t, category="no_response",
                               text="call centre: 'it never answers in the morning'", actor="mina", now=now)
        s.commit()
        linked = [u.request_id for u in voc.linked_utterances(s, fb.id)]
        assert linked == ["req-before", "req-at", "req-after"]
        assert (fb.source, fb.created_by, fb.request_id, fb.dialect) == ("ops", "mina", None, "jeolla")
        assert fb.causes == ["slice:dialect=jeolla"] and fb.priority == 20 + 10 + 15
        narrow = voc.log_complaint(s, device_id="tv-7", occurred_at=t.replace(tzinfo=None), category="other",
                                   text=None, actor="mina", config=TriageConfig(link_window=timedelta(minutes=1)),
                                   now=now)
        assert [u.request_id for u in voc.linked_utterances(s, narrow.id)] == ["req-at"]  # naive = UTC
        empty = voc.log_complaint(s, device_id="tv-8", occurred_at=now - timedelta(days=3), category="other",
                                  text="nothing then", actor="mina", now=now)
        assert voc.linked_utterances(s, empty.id) == []
        assert "0 utterance(s)" in s.scalars(select(FeedbackEvent.note).where(FeedbackEvent.feedback_id == empty.id)
                                             ).one()
        with pytest.raises(MonitoringError, match="no device 'tv-9'"):
            voc.log_complaint(s, device_id="tv-9", occurred_at=t, category="other", text=None, actor="mina")
        with pytest.raises(MonitoringError, match="in the future"):
            voc.log_complaint(s, device_id="tv-7", occurred_at=now + timedelta(hours=1), category="other",
                              text=None, actor="mina", now=now)
        with pytest.raises(MonitoringError, match="more than 366 days ago"):
            voc.log_complaint(s, device_id="tv-7", occurred_at=now - timedelta(days=800), category="other",
                              text=None, actor="mina", now=now)


def test_workflow_moves_only_along_the_allowed_steps_with_who_and_when(catalog):
    with catalog() as s:
        register_device(s, "d1")
        served(s, "req-1", "d1")
        fb, _ = voc.intake_device_feedback(s, device_id="d1", request_id="req-1", category="too_slow")
        allowed = r"is new; from there it can go to \['triaged', 'closed'\], not 'fixed'"
        with pytest.raises(MonitoringError, match=allowed):
            voc.set_status(s, fb.id, "fixed", actor="mina", fixed_in_model_version="4")
        with pytest.raises(MonitoringError, match="unknown status 'done'; valid"):
            voc.set_status(s, fb.id, "done", actor="mina")
        voc.triage(s, fb.id, actor="mina")
        voc.triage(s, fb.id, actor="joon")  # re-tags; no second status event
        with pytest.raises(MonitoringError, match="needs fixed_in_model_version"):
            voc.set_status(s, fb.id, "fixed", actor="mina")
        with pytest.raises(MonitoringError, match="goes with status fixed only"):
            voc.set_status(s, fb.id, "closed", actor="mina", fixed_in_model_version="4")
        voc.set_status(s, fb.id, "fixed", actor="mina", fixed_in_model_version="4")
        with pytest.raises(MonitoringError, match="is fixed; triage applies"):
            voc.triage(s, fb.id, actor="mina")
        voc.set_status(s, fb.id, "triaged", actor="joon", note="came back with model 5")  # reopened
        voc.set_status(s, fb.id, "closed", actor="joon", note="customer moved")
        with pytest.raises(MonitoringError) as e:
            voc.set_status(s, fb.id, "closed", actor="joon")
        assert e.value.code == "conflict"
        with pytest.raises(MonitoringError, match="no complaint 'voc-nope'") as e:
            voc.set_status(s, "voc-nope", "closed", actor="joon")
        assert e.value.code == "not_found"
        s.commit()
        events = s.execute(select(FeedbackEvent.actor, FeedbackEvent.from_status, FeedbackEvent.to_status)
                           .where(FeedbackEvent.feedback_id == fb.id).order_by(FeedbackEvent.id)).all()
        assert [tuple(e) for e in events] == [("device:d1", None, "new"), ("mina", "new", "triaged"),
                                              ("mina", "triaged", "fixed"), ("joon", "fixed", "triaged"),
                                              ("joon", "triaged", "closed")]
        assert s.get(Feedback, fb.id).fixed_in_model_version == "4"


def test_labeling_needs_consented_audio_and_labeled_follows_the_review(catalog, audio_store):
    with catalog() as s:
        for device_id, training, review in (("none", False, False), ("keep", True, False), ("listen", True, True)):
            register_device(s, device_id, profile={"age_band": "60s"})
            if training:
                grant_device_consent(s, device_id=device_id, text_version="v1", scope_training=True,
                                     scope_human_review=review, retention_days=30)
            served(s, f"req-{device_id}", device_id, store=audio_store, confidence=0.2)
        complaints = {d: voc.intake_device_feedback(s, device_id=d, request_id=f"req-{d}", category="misrecognized")[0]
                      for d in ("none", "keep", "listen")}
        with pytest.raises(MonitoringError, match="does not allow keeping audio"):
            voc.send_to_labeling(s, complaints["none"].id, actor="mina")
        with pytest.raises(MonitoringError, match="does not allow human review"):
            voc.send_to_labeling(s, complaints["keep"].id, actor="mina")
        assert complaints["keep"].status == "new"  # refused: nothing changed
        fb = complaints["listen"]
        task = voc.send_to_labeling(s, fb.id, actor="mina")
        s.commit()
        assert (task.reason, task.feedback_id, task.round) == ("voc", fb.id, 1)
        assert task.priority == 100 + fb.priority and fb.status == "triaged" and fb.label_task_id == task.id
        assert voc.send_to_labeling(s, fb.id, actor="mina").id == task.id  # again: the same task
        assert s.scalar(select(func.count()).select_from(LabelTask)) == 1
        assert voc.sync_labeled(s) == []  # nothing reviewed yet

        labeler = create_user(s, "lab", "labeler", PASSWORD)
        reviewer = create_user(s, "rev", "reviewer", PASSWORD)
        labeling.assign(s, [labeler])
        label = labeling.submit(s, task.id, labeler, "거실 불 켜 줘")
        labeling.review(s, label.id, reviewer, accept=True)
        assert voc.sync_labeled(s) == [fb.id]
        assert voc.sync_labeled(s) == []  # idempotent
        s.commit()
        detail = voc_queries.feedback_detail(s, fb.id)
        assert detail["status"] == "labeled"
        (utt,) = detail["linked"]
        assert utt["audio"] is True and utt["reference"]["text"] == "거실 불 켜 줘"
        assert utt["hypothesis"] == "거실 불 켜 줘" and utt["causes"] == ["low_confidence"]
        assert [e["to_status"] for e in detail["events"]] == ["new", "triaged", "triaged", "labeled"]
        assert voc_queries.linked_audio(s, fb.id, "req-listen").id == task.recording_id
        with pytest.raises(MonitoringError) as e:
            voc_queries.linked_audio(s, complaints["keep"].id, "req-keep")
        assert e.value.code == "forbidden"
        with pytest.raises(MonitoringError, match="not linked"):
            voc_queries.linked_audio(s, fb.id, "req-keep")
        keep = voc_queries.feedback_detail(s, complaints["keep"].id)["linked"][0]
        assert keep["audio"] is False and keep["reference"] is None


def test_inbox_filters_and_absurd_ranges(catalog):
    now = utcnow()
    with catalog() as s:
        register_device(s, "g1", profile={"region": "gyeongsang"})
        register_device(s, "s1", profile={"region": "standard", "age_band": "30s"})
        register_device(s, "u1")
        served(s, "req-g", "g1", confidence=0.2)
        served(s, "req-s", "s1", snr_db=3.0)
        served(s, "req-u", "u1")
        script = "<script>alert('x')</script><img src=x onerror=alert(1)>"
        g, _ = voc.intake_device_feedback(s, device_id="g1", request_id="req-g", category="misrecognized", text=script)
        st, _ = voc.intake_device_feedback(s, device_id="s1", request_id="req-s", category="wrong_action")
        u, _ = voc.intake_device_feedback(s, device_id="u1", request_id="req-u", category="other")
        voc.triage(s, st.id, actor="mina")
        s.commit()

        def ids(**kw) -> list[str]:
            return [item.id for item in voc_queries.list_feedback(s, voc_queries.FeedbackFilter(**kw)).items]

        assert ids() == [g.id, st.id, u.id]  # priority: gyeongsang low confidence 70, wrong action low SNR 45
        assert ids(slice_key="dialect", slice_value="gyeongsang") == [g.id]
        assert ids(slice_key="dialect", slice_value="unknown") == [u.id]
        assert ids(cause="low_snr") == [st.id]
        assert ids(cause="slice:dialect=gyeongsang") == [g.id]
        assert ids(status="triaged") == [st.id] and ids(category="other") == [u.id]
        assert ids(since=now - timedelta(minutes=5), until=now + timedelta(minutes=5)) == [g.id, st.id, u.id]
        assert ids(until=now - timedelta(minutes=5)) == []
        page = voc_queries.list_feedback(s, limit=1, offset=1)
        assert page.total == 3 and [i.id for i in page.items] == [st.id] and len(page.items[0].utterances) == 1
        assert voc_queries.feedback_detail(s, g.id)["text"] == script  # data, exactly as given

        for bad, message in (({"since": now, "until": now - timedelta(days=1)}, "must be before until"),
                             ({"since": now - timedelta(days=400), "until": now}, "at most 366"),
                             ({"slice_key": "mood", "slice_value": "sad"}, "unknown slice key"),
                             ({"slice_key": "dialect"}, "needs slice_key"),
                             ({"cause": "gremlins"}, "unknown cause 'gremlins'"),
                             ({"status": "closing"}, "unknown status 'closing'")):
            with pytest.raises(MonitoringError, match=message):
                ids(**bad)


def test_voc_rate_per_1000_utterances_per_slice_and_bucket(catalog):
    t0 = (utcnow() - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    with catalog() as s:
        register_device(s, "g", profile={"region": "gyeongsang"})
        register_device(s, "n")
        plan = {("g", 0): 4, ("n", 0): 5, ("g", 1): 2}  # (device, day) -> utterances
        for (device, day), n in plan.items():
            for i in range(n):
                served(s, f"{device}-{day}-{i}", device, at=t0 + timedelta(days=day, hours=1, minutes=i),
                       dialect="gyeongsang" if device == "g" else None)
        for rid in ("g-0-0", "g-0-1", "n-0-0", "g-1-0"):  # each complained about a few seconds later
            device, day, i = rid.split("-")
            voc.intake_device_feedback(s, device_id=device, request_id=rid, category="misrecognized",
                                       now=t0 + timedelta(days=int(day), hours=1, minutes=int(i), seconds=30))
        s.commit()
        rows = voc_queries.voc_rate(s, since=t0, until=t0 + timedelta(days=2), bucket_s=86400, slice_key="dialect")
        got = [(r.bucket_start - t0, r.slice_value, r.utterances, r.voc, r.per_1000) for r in rows]
        assert got == [(timedelta(0), "gyeongsang", 4, 2, 500.0), (timedelta(0), "unknown", 5, 1, 200.0),
                       (timedelta(days=1), "gyeongsang", 2, 1, 500.0)]
        total = voc_queries.voc_rate(s, since=t0, until=t0 + timedelta(days=2), bucket_s=86400)
        assert [(r.slice_value, r.utterances, r.voc) for r in total] == [("all", 9, 3), ("all", 2, 1)]
        hourly = voc_queries.voc_rate(s, since=t0, until=t0 + timedelta(hours=2), bucket_s=3600)
        assert [(r.bucket_start - t0, r.utterances) for r in hourly] == [(timedelta(hours=1), 9)]
        for kwargs, message in (({"until": t0 - timedelta(days=1)}, "must be before until"),
                                ({"until": t0 + timedelta(days=367)}, "in the future"),
                                ({"until": t0 + timedelta(days=1), "bucket_s": 600}, "whole number of hours"),
                                ({"until": t0 + timedelta(days=1), "slice_key": "mood"}, "unknown slice key")):
            with pytest.raises(MonitoringError, match=message):
                voc_queries.voc_rate(s, since=t0, **kwargs)
        with pytest.raises(MonitoringError, match="at most 366"):
            voc_queries.voc_rate(s, since=t0 - timedelta(days=400), until=t0)

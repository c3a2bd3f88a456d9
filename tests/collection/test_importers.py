"""Corpus importers on fixtures written in each format's exact public layout, with real eSpeak speech
from the ``tiny_studio`` fixture: speakers and their attributes map into the catalog, re-runs add
nothing, structural problems are clear errors that store nothing, bad rows are stored rejections."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _ingest_helpers import mp3_bytes, wav_bytes
from scipy.signal import resample_poly
from sqlalchemy import func, select

from collection.importers import (
    IMPORTERS,
    CorpusError,
    import_corpus,
    map_age,
    map_dialect,
    map_gender,
)
from collection.manifest import load_split
from collection.models import Consent, Recording, Rejection, Speaker

CV_COLUMNS = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
              "gender", "accents", "variant", "locale", "segment"]


@pytest.fixture(scope="module")
def utts(tiny_studio):
    """Real eSpeak utterances (16 kHz WAV + Korean transcript) from the studio's train split."""
    return load_split(tiny_studio / "train")


def counts(session) -> dict[str, int]:
    return {m.__name__: session.scalar(select(func.count()).select_from(m))
            for m in (Recording, Rejection, Speaker, Consent)}


def run(catalog, store, fmt, path, **kw):
    with catalog() as s:
        report = import_corpus(s, store, fmt, path, language="ko", progress=False, **kw)
        s.commit()
    return report


def client_id(name: str) -> str:
    return hashlib.sha512(name.encode()).hexdigest()  # Common Voice client ids are 128 hex characters


def write_common_voice(root: Path, utts, *, old_release: bool = False) -> Path:
    """``<root>/ko/validated.tsv`` + ``clips/*.mp3`` (48 kHz MP3), 3 good rows, a corrupt clip, a missing clip."""
    locale = root / "ko"
    (locale / "clips").mkdir(parents=True)
    people = [("twenties", "male_masculine", "서울"), ("sixties", "female_feminine", "경상도 억양"),
              ("seventies", "male_masculine", "")]
    rows = []
    for i, (u, (age, gender, accent)) in enumerate(zip(utts[:3], people, strict=True)):
        wav, _ = sf.read(u.audio_path, dtype="float32")
        name = f"common_voice_ko_{4000 + i}.mp3"
        (locale / "clips" / name).write_bytes(mp3_bytes(resample_poly(wav, 3, 1).astype(np.float32), 48000))
        rows.append({"client_id": client_id(f"p{i}"), "path": name, "sentence_id": f"s{i}", "sentence": u.text,
                     "sentence_domain": "", "up_votes": "2", "down_votes": "0", "age": age,
                     "gender": gender if not old_release else gender.split("_")[0], "accents": accent,
                     "variant": "", "locale": "ko", "segment": ""})
    (locale / "clips" / "common_voice_ko_4003.mp3").write_bytes(b"ID3\x03\x00 this is not an mp3" * 30)
    rows.append({**rows[0], "path": "common_voice_ko_4003.mp3", "sentence_id": "s3"})
    rows.append({**rows[1], "path": "common_voice_ko_4004.mp3", "sentence_id": "s4"})  # clip never downloaded
    columns = CV_COLUMNS
    if old_release:  # releases before v8: no sentence_id/variant/domain, "accent" singular
        columns = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent", "locale",
                   "segment"]
        rows = [{**{k: v for k, v in r.items() if k in columns}, "accent": r["accents"]} for r in rows]
    with (locale / "validated.tsv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, columns, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n",
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return locale


def test_common_voice(tmp_path, utts, catalog, audio_store):
    locale = write_common_voice(tmp_path / "cv-corpus-17.0", utts)
    report = run(catalog, audio_store, "commonvoice", locale, licence="CC0-1.0")
    assert (report.seen, report.accepted, report.rejected) == (5, 3, 2)
    assert report.reasons == {"undecodable": 2} and report.speakers == 3
    with catalog() as s:
        recs = s.scalars(select(Recording).order_by(Recording.external_id)).all()
        assert [r.external_id for r in recs] == [f"commonvoice:common_voice_ko_{4000 + i}.mp3" for i in range(3)]
        assert all(r.source == "import" and r.sample_rate == 16000 and r.channels == 1 for r in recs)
        assert [r.qc["original_sample_rate"] for r in recs] == [48000] * 3  # the MP3 decoded at its own rate
        assert recs[0].prompt_text == utts[0].text and recs[0].meta["up_votes"] == "2"
        assert recs[0].meta["locale"] == "ko" and "sentence" not in recs[0].meta
        speakers = {r.speaker.external_id: r.speaker for r in recs}
        p0, p1, p2 = (speakers[client_id(f"p{i}")] for i in range(3))
        assert (p0.gender, p0.age_band, p0.dialect) == ("male", "20s", "standard")
        assert (p1.gender, p1.age_band, p1.dialect) == ("female", "60s", "gyeongsang")
        assert (p2.age_band, p2.dialect, p2.source, p2.persona) == ("70s+", None, "import:commonvoice", "real")
        consent = s.scalars(select(Consent)).one()
        assert consent.text_version == "corpus:commonvoice:ko" and consent.scope_training
        assert consent.scope_human_review and consent.retention_days == 3650
        assert consent.checklist["licence"] == "CC0-1.0" and p0.consent_id == consent.id
        rejections = {r.external_id: r for r in s.scalars(select(Rejection))}
        corrupt = rejections["commonvoice:common_voice_ko_4003.mp3"]
        assert corrupt.reason == "undecodable" and corrupt.speaker_id == p0.id
        assert "no such file" in rejections["commonvoice:common_voice_ko_4004.mp3"].detail
        before = counts(s)

    again = run(catalog, audio_store, "commonvoice", locale)
    assert (again.accepted, again.exists, again.rejected, again.previously_rejected) == (0, 3, 0, 2)
    with catalog() as s:
        assert counts(s) == before
    assert len(audio_store.keys()) == 3


def test_common_voice_old_release_and_tsv_file(tmp_path, utts, catalog, audio_store):
    locale = write_common_voice(tmp_path / "cv-corpus-5.1", utts, old_release=True)
    report = run(catalog, audio_store, "commonvoice", locale / "validated.tsv", limit=2)
    assert (report.seen, report.accepted) == (2, 2)
    with catalog() as s:
        genders = sorted(sp.gender for sp in s.scalars(select(Speaker)))
        dialects = sorted(str(sp.dialect) for sp in s.scalars(select(Speaker)))
    assert genders == ["female", "male"] and dialects == ["gyeongsang", "standard"]


def test_retry_rejected_after_fixing_a_clip(tmp_path, utts, catalog, audio_store):
    locale = write_common_voice(tmp_path / "cv", utts)
    run(catalog, audio_store, "commonvoice", locale)
    wav, _ = sf.read(utts[3].audio_path, dtype="float32")
    (locale / "clips" / "common_voice_ko_4003.mp3").write_bytes(mp3_bytes(wav, 16000))  # a good download now
    report = run(catalog, audio_store, "commonvoice", locale, retry_rejected=True)
    assert (report.accepted, report.exists, report.rejected) == (1, 3, 1)
    with catalog() as s:
        assert s.scalars(select(Rejection.external_id)).all() == ["commonvoice:common_voice_ko_4004.mp3"]
        assert counts(s)["Recording"] == 4


def test_common_voice_missing_column_or_file(tmp_path, utts, catalog, audio_store):
    locale = write_common_voice(tmp_path / "cv", utts)
    tsv = locale / "validated.tsv"
    tsv.write_text(tsv.read_text().replace("\tsentence\t", "\ttext\t", 1))
    with pytest.raises(CorpusError, match=r"missing column\(s\) \['sentence'\]"):
        run(catalog, audio_store, "commonvoice", locale)
    tsv.unlink()
    with pytest.raises(CorpusError, match="validated.tsv not found"):
        run(catalog, audio_store, "commonvoice", locale)
    with catalog() as s:
        assert set(counts(s).values()) == {0}  # nothing stored, not even the consent
    with pytest.raises(ValueError, match=r"unknown corpus format 'wav2vec'; available: \['audiofolder'"):
        run(catalog, audio_store, "wav2vec", locale)


def write_kaldi(root: Path, utts) -> Path:
    """An egs-style recipe dir: ``data/train/{wav.scp,segments,text,utt2spk,spk2gender}`` with audio in
    ``wav/`` relative to the recipe dir; two recordings, each holding two utterances."""
    data = root / "data" / "train"
    data.mkdir(parents=True)
    (root / "wav").mkdir()
    gap = np.zeros(8000, dtype=np.float32)
    scp, segments, text, utt2spk = [], [], [], []
    for r, (spk, pair) in enumerate((("spkA", utts[0:2]), ("spkB", utts[5:7]))):
        pieces, t = [], 0.0
        for k, u in enumerate(pair):
            wav, _ = sf.read(u.audio_path, dtype="float32")
            utt = f"{spk}-rec{r}-{k}"
            segments.append(f"{utt} rec{r} {t:.3f} {t + len(wav) / 16000:.3f}")
            text.append(f"{utt} {u.text}")
            utt2spk.append(f"{utt} {spk}")
            pieces += [wav, gap]
            t += (len(wav) + len(gap)) / 16000
        sf.write(root / "wav" / f"rec{r}.wav", np.concatenate(pieces), 16000)
        scp.append(f"rec{r} wav/rec{r}.wav")
    for name, lines in (("wav.scp", scp), ("segments", segments), ("text", text), ("utt2spk", utt2spk),
                        ("spk2gender", ["spkA m", "spkB f"])):
        (data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def test_kaldi_with_segments(tmp_path, utts, catalog, audio_store):
    data = write_kaldi(tmp_path / "s5", utts)
    report = run(catalog, audio_store, "kaldi", data, corpus="zeroth-train")
    assert (report.accepted, report.rejected, report.speakers) == (4, 0, 2)
    with catalog() as s:
        rec = s.scalars(select(Recording).where(Recording.external_id == "kaldi:zeroth-train/spkB-rec1-1")).one()
        # the segment was cut out of rec1: as long as the studio utterance it came from
        assert rec.duration == pytest.approx(utts[6].duration, abs=0.01)
        assert rec.prompt_text == utts[6].text and rec.meta == {"recording": "rec1"}
        assert (rec.speaker.external_id, rec.speaker.gender) == ("zeroth-train/spkB", "female")
        before = counts(s)
    assert run(catalog, audio_store, "kaldi", data, corpus="zeroth-train").exists == 4
    with catalog() as s:
        assert counts(s) == before


def test_kaldi_without_segments_and_bad_rows(tmp_path, utts, catalog, audio_store):
    data = tmp_path / "train"
    data.mkdir()
    for i, u in enumerate(utts[:2]):
        shutil.copy(u.audio_path, data / f"u{i}.wav")
    (data / "wav.scp").write_text(f"u0 {data / 'u0.wav'}\nu1 u1.wav\nu2 missing.wav\n")
    (data / "text").write_text(f"u0 {utts[0].text}\nu1\nu2 {utts[2].text}\n", encoding="utf-8")
    (data / "utt2spk").write_text("u0 s1\nu1 s1\n")  # u2 has no speaker
    report = run(catalog, audio_store, "kaldi", data)
    assert (report.accepted, report.rejected) == (1, 2)
    assert report.reasons == {"bad_text": 1, "undecodable": 1}
    with catalog() as s:
        reasons = dict(s.execute(select(Rejection.external_id, Rejection.reason)).all())
        speaker = s.scalars(select(Speaker).where(Speaker.external_id == "train/s1")).one()
        unknown = s.scalars(select(Rejection).where(Rejection.external_id == "kaldi:train/u2")).one().speaker_id
        assert s.get(Speaker, unknown).external_id == "train/_unknown"  # one shared stand-in, under the consent
        assert s.get(Speaker, unknown).consent_id == speaker.consent_id is not None
    assert reasons == {"kaldi:train/u1": "bad_text", "kaldi:train/u2": "undecodable"}
    assert speaker.gender is None  # no spk2gender


def test_kaldi_refuses_pipes_and_missing_files(tmp_path, utts, catalog, audio_store):
    data = write_kaldi(tmp_path / "s5", utts)
    (data / "wav.scp").write_text("rec0 wav/rec0.wav\nrec1 sox wav/rec1.flac -t wav - |\n")
    with pytest.raises(CorpusError, match="command pipe"):
        run(catalog, audio_store, "kaldi", data)
    (data / "utt2spk").unlink()
    with pytest.raises(CorpusError, match="utt2spk not found"):
        run(catalog, audio_store, "kaldi", data)
    with catalog() as s:
        assert set(counts(s).values()) == {0}


def write_audiofolder(root: Path, utts) -> Path:
    """``metadata.csv`` (file_name, transcription, speaker_id, gender, age, emotion) next to the audio."""
    root.mkdir(parents=True)
    with (root / "metadata.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "transcription", "speaker_id", "gender", "age", "emotion"])
        for i, u in enumerate(utts[:3]):
            (root / "clips").mkdir(exist_ok=True)
            shutil.copy(u.audio_path, root / "clips" / f"{i}.wav")
            writer.writerow([f"clips/{i}.wav", u.text, f"s{i % 2}", "F" if i % 2 else "M", str(34 + 30 * i),
                             "calm"])
        writer.writerow(["clips/3.wav", "   ", "s1", "F", "", "calm"])
        (root / "clips" / "3.wav").write_bytes(wav_bytes(sf.read(utts[3].audio_path, dtype="float32")[0]))
    return root


def test_audiofolder(tmp_path, utts, catalog, audio_store):
    root = write_audiofolder(tmp_path / "my_dataset", utts)
    report = run(catalog, audio_store, "audiofolder", root)
    assert (report.accepted, report.rejected, report.reasons) == (3, 1, {"bad_text": 1})
    with catalog() as s:
        rec = s.scalars(select(Recording).where(Recording.external_id == "audiofolder:my_dataset/clips/2.wav")).one()
        assert rec.meta == {"speaker_id": "s0", "gender": "M", "age": "94", "emotion": "calm"}
        assert (rec.speaker.gender, rec.speaker.age_band) == ("male", "30s")  # the speaker's first row: 34
        before = counts(s)
    assert run(catalog, audio_store, "audiofolder", root).exists == 3
    with catalog() as s:
        assert counts(s) == before

    (root / "metadata.csv").write_text("file,transcription\nclips/0.wav,x\n")
    with pytest.raises(CorpusError, match=r"needs a 'file_name' column.*found \['file', 'transcription'\]"):
        run(catalog, audio_store, "audiofolder", root)


def test_lhotse_studio_output(tiny_studio, catalog, audio_store):
    report = run(catalog, audio_store, "lhotse", tiny_studio / "dev")
    expected = load_split(tiny_studio / "dev")
    assert (report.accepted, report.rejected) == (len(expected), 0)
    with catalog() as s:
        recs = s.scalars(select(Recording)).all()
        assert {r.external_id for r in recs} == {f"lhotse:dev/{u.id}" for u in expected}
        speaker = recs[0].speaker
        persona = expected[0].supervision.custom
        assert (speaker.gender, speaker.age_band, speaker.dialect, speaker.persona) == (
            expected[0].supervision.gender, persona["age_band"], persona["dialect"], "synthetic")
        before = counts(s)
    assert run(catalog, audio_store, "lhotse", tiny_studio / "dev").exists == len(expected)
    with catalog() as s:
        assert counts(s) == before


def test_lhotse_gzip_prefixed_manifests_with_spans(tmp_path, utts, catalog, audio_store):
    """``corpus_recordings_dev.jsonl.gz`` pairs, absolute audio paths, two supervisions in one recording."""
    a, _ = sf.read(utts[0].audio_path, dtype="float32")
    b, _ = sf.read(utts[1].audio_path, dtype="float32")
    long = np.concatenate([a, np.zeros(4000, np.float32), b])
    sf.write(tmp_path / "long.wav", long, 16000)
    rec = {"id": "long", "sources": [{"type": "file", "channels": [0], "source": str(tmp_path / "long.wav")}],
           "sampling_rate": 16000, "num_samples": len(long), "duration": len(long) / 16000, "channel_ids": [0]}
    sups = [{"id": "long-0", "recording_id": "long", "start": 0.0, "duration": len(a) / 16000, "channel": 0,
             "text": utts[0].text, "language": "Korean", "speaker": "spk", "gender": "M", "custom": {"age": "61"}},
            {"id": "long-1", "recording_id": "long", "start": (len(a) + 4000) / 16000, "duration": len(b) / 16000,
             "channel": 0, "text": utts[1].text, "language": "Korean", "speaker": "spk", "gender": "M"},
            {"id": "gone-0", "recording_id": "gone", "start": 0.0, "duration": 1.0, "channel": 0, "text": "불 꺼",
             "language": "Korean", "speaker": "spk", "gender": "M"}]
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for name, lines in (("recordings", [rec]), ("supervisions", sups)):
        with gzip.open(manifests / f"corpus_{name}_dev.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in lines)
    report = run(catalog, audio_store, "lhotse", manifests)
    assert (report.accepted, report.rejected) == (2, 1)
    with catalog() as s:
        assert "unknown recording 'gone'" in s.scalars(select(Rejection)).one().detail
        got = {r.external_id: r for r in s.scalars(select(Recording))}
        second = got["lhotse:manifests/long-1"]
        assert (second.speaker.gender, second.speaker.age_band, second.speaker.persona) == ("male", "60s", "real")
    assert second.duration == pytest.approx(len(b) / 16000, abs=0.01) and second.prompt_text == utts[1].text
    stored, _ = sf.read(io.BytesIO(audio_store.get(second.uri)), dtype="float32")
    assert np.abs(stored - b[: len(stored)]).max() < 0.01  # exactly the second utterance's samples

    (manifests / "corpus_supervisions_dev.jsonl.gz").unlink()
    with pytest.raises(CorpusError, match="corpus_supervisions_dev.jsonl.gz not found"):
        run(catalog, audio_store, "lhotse", manifests)


def test_lhotse_refuses_url_sources(tmp_path, catalog, audio_store):
    (tmp_path / "recordings.jsonl").write_text(json.dumps(
        {"id": "r", "sources": [{"type": "url", "channels": [0], "source": "https://example.com/a.wav"}],
         "sampling_rate": 16000, "num_samples": 16000, "duration": 1.0}) + "\n")
    (tmp_path / "supervisions.jsonl").write_text("")
    with pytest.raises(CorpusError, match=r"audio sources \['url'\]; only 'file'"):
        run(catalog, audio_store, "lhotse", tmp_path)


def test_mappings():
    assert set(IMPORTERS) == {"commonvoice", "kaldi", "audiofolder", "lhotse"}
    assert [map_age(v) for v in ("teens", "twenties", "fourties", "fifties", "seventies", "nineties", "45", "70s",
                                 "30s", "", None)] == [None, "20s", "40s", "50s", "70s+", "70s+", "40s", "70s+",
                                                       "30s", None, None]
    assert [map_gender(v) for v in ("male_masculine", "female_feminine", "M", "f", "other", None)] == [
        "male", "female", "male", "female", None, None]
    assert map_dialect("전라도", "ko") == "jeolla" and map_dialect("Jeju", "en") == "jeju"
    assert map_dialect("Scottish", "en") is None and map_dialect("전라도", "en") is None


def test_cli_formats_match_importers():
    from voiceloop.commands.importing import FORMATS

    assert set(FORMATS) == set(IMPORTERS)


def test_revoked_corpus_consent_blocks_a_new_import(tmp_path, utts, catalog, audio_store):
    from collection.models import utcnow

    root = write_audiofolder(tmp_path / "withdrawn", utts)
    run(catalog, audio_store, "audiofolder", root, limit=1)
    with catalog() as s:
        s.scalars(select(Consent)).one().revoked_at = utcnow()
        s.commit()
    with pytest.raises(ValueError, match="consent for corpus 'withdrawn' .* was revoked"):
        run(catalog, audio_store, "audiofolder", root)


def test_erased_people_do_not_come_back_with_a_reimport(tmp_path, utts, catalog, audio_store):
    """A deletion request erases spkB; importing the same corpus again skips spkB's items, and their
    audio offered through another source is refused as erased — with nothing recorded about them."""
    from collection.deletion import delete_speaker
    from collection.ingest import ingest

    secret = "test-erasure-key"
    data = write_kaldi(tmp_path / "s5", utts)
    run(catalog, audio_store, "kaldi", data, corpus="zeroth-train", erasure_secret=secret)
    with catalog() as s:
        spk = s.scalars(select(Speaker).where(Speaker.external_id == "zeroth-train/spkB")).one()
        erased_audio = audio_store.get(s.scalars(select(Recording).where(Recording.speaker_id == spk.id)).first().uri)
        delete_speaker(s, audio_store, spk.id, actor="test", reason="request", secret=secret, check_models=False)
        s.commit()
        before = counts(s)
    again = run(catalog, audio_store, "kaldi", data, corpus="zeroth-train", erasure_secret=secret)
    assert again.erased == 2 and again.exists == 2 and again.accepted == 0
    with catalog() as s:
        assert counts(s) == before
        assert s.scalar(select(Speaker).where(Speaker.external_id == "zeroth-train/spkB")) is None
        result = ingest(s, audio_store, erased_audio, source="upload", external_id="re-upload",
                        erasure_secret=secret)
        assert (result.status, result.reason) == ("rejected", "erased")
        s.commit()
        assert counts(s) == before

"""The QC report over a real catalog: counts per source and reason, distributions of what was kept,
the table renderer, and the `voiceloop import` / `voiceloop qc report` commands end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _ingest_helpers import speech_like, wav_bytes
from rich.console import Console
from typer.testing import CliRunner

from collection.ingest import ingest
from collection.qc_report import Distribution, qc_report

TEXT = "거실 불 켜줘"


@pytest.fixture
def filled(catalog, audio_store):
    """upload: 3 kept (1, 2, 3 s) + silence + undecodable; synthetic: 1 kept; import: kaldi kept, CV refused."""
    with catalog() as s:
        for i, seconds in enumerate((1.0, 2.0, 3.0)):
            assert ingest(s, audio_store, wav_bytes(speech_like(seconds, seed=i)), source="upload",
                          external_id=f"u{i}", text=TEXT).status == "accepted"
        ingest(s, audio_store, wav_bytes(np.zeros(16000, np.float32)), source="upload", external_id="quiet")
        ingest(s, audio_store, b"nonsense", source="upload", external_id="junk")
        ingest(s, audio_store, wav_bytes(speech_like(1.5, seed=5)), source="synthetic", external_id="syn")
        ingest(s, audio_store, wav_bytes(speech_like(1.5, seed=6)), source="import", external_id="kaldi:c/u1",
               text=TEXT)
        ingest(s, audio_store, b"", source="import", external_id="commonvoice:x.mp3")
        s.commit()
    return catalog


def test_counts_reasons_and_distributions(filled):
    with filled() as s:
        report = qc_report(s)
    by = {g.source: g for g in report.sources}
    assert list(by) == ["import:commonvoice", "import:kaldi", "synthetic", "upload"]
    upload = by["upload"]
    assert (upload.accepted, upload.rejected, upload.reasons) == (3, 2, {"silence": 1, "undecodable": 1})
    assert upload.acceptance == pytest.approx(0.6)
    assert (upload.duration.n, upload.duration.median) == (3, 2.0)
    assert upload.duration.p10 == pytest.approx(1.2) and upload.duration.p90 == pytest.approx(2.8)
    assert upload.hours == pytest.approx(6 / 3600, abs=1e-4)
    assert upload.snr_db.n == 3 and upload.snr_db.median > 3
    assert (by["import:commonvoice"].accepted, by["import:commonvoice"].rejected) == (0, 1)
    assert by["import:commonvoice"].duration == Distribution()
    total = report.total
    assert (total.accepted, total.rejected) == (5, 3)
    assert total.reasons == {"silence": 1, "undecodable": 2}
    json.dumps(report.to_dict())  # serialisable as is


def test_source_filter(filled):
    with filled() as s:
        imports = qc_report(s, source="import")
        kaldi = qc_report(s, source="import:kaldi")
        nothing = qc_report(s, source="production")
    assert [g.source for g in imports.sources] == ["import:commonvoice", "import:kaldi"]
    assert [g.source for g in kaldi.sources] == ["import:kaldi"] and kaldi.total.accepted == 1
    assert nothing.sources == [] and nothing.total.acceptance is None


def test_render(filled):
    with filled() as s:
        report = qc_report(s)
    console = Console(record=True, width=200)
    report.render(console)
    text = console.export_text()
    assert "upload" in text and "import:kaldi" in text and "60%" in text
    assert "Rejections by reason" in text and "undecodable" in text


def test_import_and_report_commands(tmp_path):
    from voiceloop.cli import app

    folder = tmp_path / "corpus"
    folder.mkdir()
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "sentence", "speaker_id"])
        for i in range(2):
            (folder / f"{i}.wav").write_bytes(wav_bytes(speech_like(1.5, seed=10 + i)))
            writer.writerow([f"{i}.wav", TEXT, "a"])
        (folder / "2.wav").write_bytes(b"broken")
        writer.writerow(["2.wav", TEXT, "b"])
    data = tmp_path / "data"
    runner = CliRunner()
    args = ["import", "audiofolder", str(folder), "--data-dir", str(data), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert (report["accepted"], report["rejected"], report["reasons"]) == (2, 1, {"undecodable": 1})
    again = json.loads(runner.invoke(app, args).stdout)
    assert (again["accepted"], again["exists"], again["previously_rejected"]) == (0, 2, 1)

    qc = runner.invoke(app, ["qc", "report", "--data-dir", str(data), "--json"])
    assert qc.exit_code == 0, qc.output
    summary = json.loads(qc.stdout)
    assert summary["total"]["accepted"] == 2 and summary["sources"][0]["source"] == "import:audiofolder"
    table = runner.invoke(app, ["qc", "report", "--data-dir", str(data), "--source", "import"])
    assert table.exit_code == 0 and "import:audiofolder" in table.stdout

    bad = runner.invoke(app, ["import", "kaldi", str(folder), "--data-dir", str(data)])
    assert bad.exit_code == 2 and "wav.scp not found" in bad.stderr

"""Deletion requests: erase a speaker (or some recordings) from every store, and say where they had been.

:func:`delete_speaker` removes, in one catalog transaction plus file operations:

- the speaker's audio files from the audio store;
- every catalog row about them: recordings, label tasks, labels, rejections (also rejections of the
  same audio bytes), dataset member rows, the speaker row; any other table that names a recording or
  speaker through a column called ``recording_id``/``speaker_id`` or a non-nullable foreign key is
  cleaned the same way, so tables added later are covered without editing this module;
- production utterances keep their service-log row (request id, device, latency) but lose the
  recording link and the hypothesis text;
- their lines in every existing dataset version's manifest (a *redaction*, recorded in
  ``DatasetVersion.redactions`` and ``dataset.json`` with the request id, date, lines removed and the
  tree's new hash — never the speaker id);
- their consent rows are kept but anonymised: ``subject_id`` becomes the subject digest (HMAC), so
  proof of what was agreed and when it ended survives, but not who agreed.

It records which dataset versions held them and which registered model versions were trained on those
(MLflow runs tagged ``dataset_version``), and writes an :class:`~collection.models.AuditEntry` whose
subject is an HMAC-SHA256 digest of the speaker id. The audit entry also keeps keyed digests of the
speaker's external id and audio hashes (:func:`was_erased`) so importers can refuse to bring the same
person or audio back. A deletion that failed half way is finished by running it again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.orm import Session

from .datasets import count_version, write_meta
from .manifest import RECORDINGS, SUPERVISIONS, manifest_hash
from .models import (
    AuditEntry,
    Base,
    Consent,
    DatasetMember,
    DatasetVersion,
    ProductionUtterance,
    Recording,
    Rejection,
    Speaker,
    utcnow,
)
from .store import AudioStore

log = logging.getLogger(__name__)

ACTIONS = ("delete_speaker", "revoke_consent", "expire_retention")


def subject_digest(secret: str, value: str) -> str:
    """HMAC-SHA256 (hex, 64 chars) of an identifier: links audit entries about one subject without naming it."""
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class DeletionReport:
    """What one deletion request removed and where the data had been."""

    request_id: str  # del-<hex>, also in the audit entry and the redactions
    action: str
    subject_digest: str
    recordings: int
    audio_files: int
    rows: dict[str, int]  # table -> rows deleted (or cleared, for production_utterances)
    dataset_versions: list[str]  # versions whose manifests held the subject (now redacted)
    model_versions: list[dict[str, str]]  # {model, version, run_id, dataset_version}
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "action": self.action, "recordings": self.recordings,
                "audio_files": self.audio_files, "rows": self.rows, "dataset_versions": self.dataset_versions,
                "model_versions": self.model_versions, "notes": self.notes}


# --- manifests --------------------------------------------------------------------------------------


def _keep_line(line: str, recording_ids: set[str], speaker_id: str | None) -> bool:
    if not line.strip():
        return False
    d = json.loads(line)
    if d.get("recording_id", d.get("id")) in recording_ids:
        return False
    return speaker_id is None or d.get("speaker") != speaker_id


def redact_version(version: DatasetVersion, recording_ids: set[str], speaker_id: str | None,
                   request_id: str) -> int:
    """Remove the lines naming ``recording_ids`` (or the speaker) from one version's manifests, in place
    (each file atomically); record the redaction and the new counts. Returns the lines removed."""
    root = Path(version.manifest_uri)
    removed = 0
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for name in (RECORDINGS, SUPERVISIONS):
            path = split_dir / name
            if not path.exists():
                continue
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = [ln for ln in lines if _keep_line(ln, recording_ids, speaker_id)]
            if len(kept) == len(lines):
                continue
            removed += len(lines) - len(kept)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, path)
    if removed:
        version.counts = count_version(root)
        version.redactions = [*version.redactions, {
            "request_id": request_id, "at": utcnow().isoformat(timespec="seconds"), "lines_removed": removed,
            "hash_after": manifest_hash(root)}]
        write_meta(root, version)
    return removed


def _redact_all(session: Session, recording_ids: set[str], speaker_id: str | None, request_id: str,
                notes: list[str]) -> list[str]:
    held = [DatasetMember.recording_id.in_(recording_ids)]
    if speaker_id:
        held.append(DatasetMember.speaker_id == speaker_id)
    member_of = set(session.scalars(select(DatasetMember.dataset_id).where(or_(*held))))
    affected = []
    for version in session.scalars(select(DatasetVersion).order_by(DatasetVersion.id)):
        if not Path(version.manifest_uri).is_dir():
            if version.id in member_of:
                notes.append(f"dataset version {version.id}: manifest directory {version.manifest_uri} is "
                             "missing; nothing to redact there")
                affected.append(version.id)
            continue
        if redact_version(version, recording_ids, speaker_id, request_id) or version.id in member_of:
            affected.append(version.id)
    return affected


# --- MLflow -----------------------------------------------------------------------------------------


def models_trained_on(dataset_ids: list[str]) -> list[dict[str, str]]:
    """Registered model versions whose run carries the tag ``dataset_version`` in ``dataset_ids``
    (searched in every experiment of the configured MLflow tracking store)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    if not dataset_ids:
        return []
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    found = []
    for ds in dataset_ids:
        runs = client.search_runs(experiments, filter_string=f"tags.dataset_version = '{ds}'",
                                  run_view_type=ViewType.ALL)
        for run in runs:
            for mv in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
                found.append({"model": mv.name, "version": str(mv.version), "run_id": run.info.run_id,
                              "dataset_version": ds})
    return sorted(found, key=lambda m: (m["model"], int(m["version"])))


def _models(dataset_ids: list[str], check: bool, notes: list[str]) -> list[dict[str, str]]:
    if not check:
        notes.append("model versions not checked (check_models=False)")
        return []
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        notes.append("model versions not checked: no MLflow tracking store configured (MLFLOW_TRACKING_URI)")
        return []
    try:
        return models_trained_on(dataset_ids)
    except Exception as e:  # noqa: BLE001 - the deletion itself must not fail because MLflow is down
        notes.append(f"model versions could not be checked: {type(e).__name__}: {e}")
        log.warning("deletion: MLflow lookup failed: %s", e)
        return []


# --- catalog ----------------------------------------------------------------------------------------


def _erase_rows(session: Session, speaker_id: str | None, recording_ids: set[str], shas: set[str]) -> dict[str, int]:
    """Delete every row that names the speaker or one of the recordings (see the module docstring)."""
    session.flush()  # pending ORM changes (redactions, consents) go first: the statements below are Core
    rows: dict[str, int] = {}
    if recording_ids:  # service-log rows survive without the audio and its transcript
        result = session.execute(update(ProductionUtterance).where(ProductionUtterance.recording_id.in_(recording_ids))
                                 .values(recording_id=None, hypothesis=None, command=None))
        if result.rowcount:
            rows["production_utterances"] = result.rowcount
    doomed: dict[str, set[Any]] = {Recording.__tablename__: set(recording_ids),
                                   Speaker.__tablename__: {speaker_id} if speaker_id else set()}
    conditions: dict[str, list[Any]] = {}
    for table in Base.metadata.sorted_tables:  # parents before children
        conds = _conditions(table, doomed, speaker_id, recording_ids)
        if table.name == Rejection.__tablename__ and shas:
            conds.append(table.c.sha256.in_(shas))
        if table.name in doomed:
            pk = table.primary_key.columns.values()[0]
            conds.append(pk.in_(doomed[table.name]))
        if not conds:
            continue
        conditions[table.name] = conds
        pks = table.primary_key.columns.values()
        if len(pks) == 1:
            doomed.setdefault(table.name, set()).update(session.scalars(select(pks[0]).where(or_(*conds))))
    for table in reversed(Base.metadata.sorted_tables):  # children before parents
        if table.name in conditions:
            n = session.execute(delete(table).where(or_(*conditions[table.name]))).rowcount
            if n:
                rows[table.name] = rows.get(table.name, 0) + n
    session.expire_all()  # objects of deleted rows must not linger in the identity map
    return rows


def _conditions(table: Table, doomed: dict[str, set[Any]], speaker_id: str | None,
                recording_ids: set[str]) -> list[Any]:
    conds = []
    for col in table.columns:
        fks = list(col.foreign_keys)
        if fks:
            target = fks[0].column.table.name
            # A nullable link (production utterance -> recording) was cleared above or is not ownership.
            if target in doomed and doomed[target] and not col.nullable and target != table.name:
                conds.append(col.in_(doomed[target]))
        elif col.name == "speaker_id" and speaker_id and table.name != Speaker.__tablename__:
            conds.append(col == speaker_id)
        elif col.name == "recording_id" and recording_ids:
            conds.append(col.in_(recording_ids))
    if table.name == Recording.__tablename__ and speaker_id:
        conds.append(table.c.speaker_id == speaker_id)
    return conds


def _anonymise_consents(session: Session, speaker: Speaker, digest: str) -> int:
    # Only the speaker's own consents: a corpus consent or a device consent covers others too.
    consents = list(session.scalars(select(Consent).where(Consent.subject_type == "speaker",
                                                          Consent.subject_id == speaker.id)))
    now = utcnow()
    for consent in consents:
        consent.subject_id = digest
        consent.revoked_at = consent.revoked_at or now
    return len(consents)


def _audit(session: Session, *, actor: str, action: str, digest: str, detail: dict[str, Any]) -> None:
    session.add(AuditEntry(actor=actor, action=action, subject_digest=digest, detail=detail))


def _scrub(text: str, *secrets: str) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "[subject]")
    return text


# --- public -----------------------------------------------------------------------------------------


def delete_speaker(
    session: Session,
    store: AudioStore,
    speaker_id: str,
    *,
    actor: str,
    reason: str,
    secret: str,
    check_models: bool = True,
    action: str = "delete_speaker",
) -> DeletionReport:
    """Erase a speaker from the audio store, the catalog and every dataset version (see the module docstring).

    ``secret`` keys the subject digest (the deployment's session secret). ``check_models`` looks the affected
    dataset versions up in the configured MLflow registry (skipped, with a note, when none is configured).

    Raises:
        LookupError: no speaker has this id (never existed, or already deleted).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; valid: {list(ACTIONS)}")
    speaker = session.get(Speaker, speaker_id)
    if speaker is None:
        raise LookupError(f"no speaker {speaker_id!r} in the catalog (never existed, or already deleted)")
    recs = session.execute(select(Recording.id, Recording.sha256, Recording.uri)
                           .where(Recording.speaker_id == speaker_id)).all()
    digest = subject_digest(secret, speaker_id)
    tombstones = {"audio": sorted(subject_digest(secret, r.sha256) for r in recs)}
    if speaker.source and speaker.external_id:
        tombstones["external"] = [subject_digest(secret, f"{speaker.source}:{speaker.external_id}")]
    consents = _anonymise_consents(session, speaker, digest)
    report = _erase(session, store, action=action, actor=actor, digest=digest, speaker_id=speaker_id, recs=recs,
                    reason=_scrub(reason, speaker_id, speaker.external_id or ""), check_models=check_models,
                    tombstones=tombstones, extra_rows={"consents_anonymised": consents} if consents else {})
    log.info("%s: erased speaker (digest %s…): %d recordings, dataset versions %s", report.request_id, digest[:12],
             report.recordings, report.dataset_versions or "none")
    return report


def delete_recordings(
    session: Session,
    store: AudioStore,
    recording_ids: list[str],
    *,
    actor: str,
    reason: str,
    secret: str,
    subject: str,
    action: str = "expire_retention",
    check_models: bool = True,
) -> DeletionReport:
    """Erase some recordings (not their speaker): retention of production audio. ``subject`` is what the
    audit digest is computed from (e.g. the device id)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; valid: {list(ACTIONS)}")
    recs = session.execute(select(Recording.id, Recording.sha256, Recording.uri)
                           .where(Recording.id.in_(recording_ids))).all()
    tombstones = {"audio": sorted(subject_digest(secret, r.sha256) for r in recs)}
    return _erase(session, store, action=action, actor=actor, digest=subject_digest(secret, subject), speaker_id=None,
                  recs=recs, reason=_scrub(reason, subject), check_models=check_models, tombstones=tombstones,
                  extra_rows={})


def _erase(session: Session, store: AudioStore, *, action: str, actor: str, digest: str, speaker_id: str | None,
           recs: list[Any], reason: str, check_models: bool, tombstones: dict[str, list[str]],
           extra_rows: dict[str, int]) -> DeletionReport:
    request_id = f"del-{uuid.uuid4().hex[:12]}"
    notes: list[str] = []
    recording_ids = {r.id for r in recs}
    shas = {r.sha256 for r in recs}
    # Manifests first, catalog rows second, audio last: if anything fails, the catalog transaction rolls
    # back and still names everything, so running the request again finishes it.
    datasets = _redact_all(session, recording_ids, speaker_id, request_id, notes)
    models = _models(datasets, check_models, notes)
    rows = {**_erase_rows(session, speaker_id, recording_ids, shas), **extra_rows}
    session.flush()
    audio = 0
    for r in recs:
        ext = r.uri.rsplit(".", 1)[-1] if "." in r.uri.rsplit("/", 1)[-1] else "wav"
        audio += store.delete(r.sha256, ext)
    report = DeletionReport(request_id=request_id, action=action, subject_digest=digest, recordings=len(recs),
                            audio_files=audio, rows=rows, dataset_versions=datasets, model_versions=models,
                            notes=notes)
    _audit(session, actor=actor, action=action, digest=digest,
           detail={**report.to_dict(), "reason": reason, "tombstones": tombstones})
    session.flush()
    return report


def was_erased(session: Session, secret: str, *, source: str | None = None, external_id: str | None = None,
               sha256: str | None = None) -> bool:
    """Whether a deletion request erased this speaker (``source`` + ``external_id``) or these audio bytes
    (``sha256``): importers call it so a re-import does not bring deleted people back."""
    wanted = set()
    if source and external_id:
        wanted.add(("external", subject_digest(secret, f"{source}:{external_id}")))
    if sha256:
        wanted.add(("audio", subject_digest(secret, sha256)))
    if not wanted:
        return False
    for detail in session.scalars(select(AuditEntry.detail).where(AuditEntry.action.in_(ACTIONS))):
        stones = (detail or {}).get("tombstones") or {}
        if any(d in stones.get(kind, ()) for kind, d in wanted):
            return True
    return False


def sweep_orphans(session: Session, store: AudioStore, *, min_age_s: float = 3600.0) -> int:
    """Delete stored audio that no recording references (a crashed import, a rolled-back upload): such
    files escape deletion requests, which find audio through the catalog. Returns how many went."""
    referenced = set(session.scalars(select(Recording.sha256)))
    doomed = store.unreferenced(referenced, min_age_s)
    for key in doomed:
        store.delete(key)
    if doomed:
        log.info("removed %d unreferenced audio file(s) from the store", len(doomed))
    return len(doomed)

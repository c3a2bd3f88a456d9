"""Dataset versions: reviewed labels frozen into an immutable, hashed, speaker-disjoint manifest.

A version lives in ``<out_root>/ds-<hash[:12]>/`` in the layout of :mod:`collection.manifest`::

    <version>/dataset.json                      id, name, content hash, parent, counts, recipe, redactions
    <version>/<split>/recordings.jsonl          sources point at the audio store (absolute paths)
    <version>/<split>/supervisions.jsonl        text = the reviewed transcript; custom = slices + label ids

What goes in: one accepted transcript per recording (:func:`collection.labeling.reviewed_transcripts`), from speakers
who may be trained on — synthetic voices (not people), or real speakers whose consent is active,
unexpired and has ``scope_training``. Splits are assigned per speaker by hashing ``seed:speaker_id``
onto ``[0, 1)``, so a speaker keeps its split in every later version as speakers are added.

The content hash is :func:`collection.manifest.manifest_hash` of the written tree; the id is
``ds-<hash[:12]>``. Building again from the same catalog returns the existing version (no new row,
no rewrite). A version directory is written once (temporary directory, then rename) and changed
afterwards only by a deletion request (:func:`collection.deletion.delete_speaker`), which records
a redaction.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import in_chunks
from .labeling import reviewed_transcripts
from .manifest import (
    RECORDINGS,
    SLICE_KEYS,
    SUPERVISIONS,
    AudioSource,
    Recording,
    Supervision,
    Utterance,
    load_split,
    manifest_hash,
    write_jsonl,
)
from .models import Consent, DatasetMember, DatasetVersion, Label, User, aware, utcnow
from .models import Recording as RecordingRow
from .models import Speaker as SpeakerRow
from .store import AudioStore, stable_fraction

log = logging.getLogger(__name__)

DATASET_FILE = "dataset.json"
DEFAULT_SPLITS = {"train": 0.8, "dev": 0.1, "test": 0.1}


def consent_in_force(consent: Consent | None, now: datetime, *, scope: str | None = "scope_training") -> bool:
    """Not revoked, within its retention period, and granting ``scope`` (when given)."""
    if consent is None or consent.revoked_at is not None or (scope and not getattr(consent, scope)):
        return False
    return aware(consent.granted_at) + timedelta(days=consent.retention_days) > now


def split_key(speaker: SpeakerRow) -> str:
    """What a speaker's split is drawn from: ``source:external_id`` when the speaker came with one, else the
    catalog id. Catalog ids are new in every catalog; the external identity is not, so the same people land
    in the same splits when a catalog is rebuilt or a test collects the same plan again."""
    return f"{speaker.source}:{speaker.external_id}" if speaker.external_id else speaker.id


def assign_split(key: str, ratios: dict[str, float], seed: int = 0) -> str:
    """The split of the speaker with ``split_key`` ``key``: ``sha256(seed:key)`` mapped onto [0, 1) and cut
    at the cumulative ratios (in the given order). Depends only on the speaker, the seed and the ratios, so
    adding speakers never moves an existing one."""
    u = stable_fraction(seed, key)
    total = sum(ratios.values())
    edge = 0.0
    for split, share in ratios.items():
        edge += share / total
        if u < edge:
            return split
    return next(reversed(ratios))


def count_slices(utterances: list[Utterance]) -> dict[str, Any]:
    """``{"total": {"utterances", "speakers", "seconds"}, <slice key>: {<value>: n}}`` for one split."""
    out: dict[str, Any] = {"total": {"utterances": len(utterances),
                                     "speakers": len({u.speaker for u in utterances}),
                                     "seconds": round(sum(u.duration for u in utterances), 3)}}
    for key in SLICE_KEYS:
        out[key] = dict(sorted(Counter(u.slices[key] for u in utterances).items()))
    return out


def count_version(root: str | Path) -> dict[str, Any]:
    """Per-split, per-slice counts of a version directory, read back from its manifests."""
    root = Path(root)
    return {d.name: count_slices(load_split(d)) for d in sorted(root.iterdir()) if (d / RECORDINGS).exists()}


def dataset_tags(data_root: str | Path) -> dict[str, str]:
    """MLflow tags naming the dataset version at ``data_root`` (``dataset_version``, ``dataset_hash``);
    empty when ``data_root`` is not a version directory (e.g. the studio's output)."""
    meta = Path(data_root) / DATASET_FILE
    if not meta.is_file():
        return {}
    info = json.loads(meta.read_text(encoding="utf-8"))
    return {"dataset_version": info["id"], "dataset_hash": info["content_hash"]}


@dataclass(frozen=True)
class _Entry:
    recording: Recording
    supervision: Supervision
    speaker_id: str
    split: str


def _frozen_labels(session: Session, include_simulated: bool) -> dict[str, tuple[Label, User | None, str]]:
    """recording id -> (label, its labeler, accepted text). Which transcript is accepted is the labeling
    workbench's rule (:func:`collection.labeling.reviewed_transcripts`); the label row is looked up for
    the ids carried into the manifest (the lowest-round reviewed label with that text)."""
    texts = reviewed_transcripts(session, include_simulated=include_simulated)
    out: dict[str, tuple[Label, User | None, str]] = {}
    if not texts:
        return out
    rows = (row for chunk in in_chunks(texts) for row in session.execute(
        select(Label, User).outerjoin(User, User.id == Label.labeler_id)
        .where(Label.status == "reviewed", Label.recording_id.in_(chunk))
        .order_by(Label.recording_id, Label.round, Label.id)))
    for label, user in rows:
        rid = label.recording_id
        if rid not in out or (out[rid][0].text != texts[rid] and label.text == texts[rid]):
            out[rid] = (label, user, texts[rid])
    return out


def _trainable(session: Session, now: datetime) -> set[tuple[str, str]]:
    """``(subject_type, subject_id)`` and ``("id", consent_id)`` of every consent that allows training now."""
    out: set[tuple[str, str]] = set()
    for consent in session.scalars(select(Consent).where(Consent.revoked_at.is_(None),
                                                          Consent.scope_training.is_(True))):
        if consent_in_force(consent, now):
            out |= {(consent.subject_type, consent.subject_id), ("id", consent.id)}
    return out


def may_train_on(speaker: SpeakerRow, trainable: set[tuple[str, str]]) -> bool:
    """A consent in force with ``scope_training``: the speaker's own (or their corpus'), or (production
    audio) the device owner's. A synthetic persona with no consent row is nobody's personal data; when it
    has one (the studio records the plan's terms), that consent governs, as for people."""
    if speaker.persona == "synthetic" and speaker.consent_id is None:
        return True
    return (("id", speaker.consent_id or "") in trainable or ("speaker", speaker.id) in trainable
            or (speaker.source == "production" and ("device", speaker.external_id or "") in trainable))


def _source(store: AudioStore, uri: str) -> AudioSource:
    local = store.local_path(uri)
    if local is not None:
        return AudioSource(type="file", channels=[0], source=str(local.resolve()))
    return AudioSource(type="url", channels=[0], source=uri)


def _entries(session: Session, store: AudioStore, ratios: dict[str, float], seed: int, include_simulated: bool,
             now: datetime) -> tuple[list[_Entry], Counter]:
    labels = _frozen_labels(session, include_simulated)
    trainable = _trainable(session, now)
    skipped: Counter = Counter()
    entries = []
    rows = (row for chunk in in_chunks(labels) for row in session.execute(
        select(RecordingRow, SpeakerRow).join(SpeakerRow, SpeakerRow.id == RecordingRow.speaker_id)
        .where(RecordingRow.id.in_(chunk)).order_by(RecordingRow.id)))
    seen = set()
    for rec, speaker in rows:
        seen.add(rec.id)
        label, labeler, text = labels[rec.id]
        if not may_train_on(speaker, trainable):
            skipped["no_training_consent"] += 1
            continue
        split = assign_split(split_key(speaker), ratios, seed)
        num_samples = round(rec.duration * rec.sample_rate)
        duration = num_samples / rec.sample_rate  # lhotse checks duration == num_samples / rate
        recording = Recording(id=rec.id, sources=[_source(store, rec.uri)], sampling_rate=rec.sample_rate,
                              num_samples=num_samples, duration=duration, channel_ids=list(range(rec.channels)))
        custom = {"age_band": speaker.age_band, "dialect": speaker.dialect, "environment": rec.environment,
                  "source": rec.source, "device": rec.device, "persona": speaker.persona, "plan": rec.plan,
                  "snr_db": (rec.qc or {}).get("snr_db"), "split": split, "label_id": label.id,
                  "label_round": label.round, "labeler_id": label.labeler_id,
                  "labeler_simulated": bool(labeler.simulated) if labeler is not None else None,
                  "agreement": label.agreement, "flags": sorted(label.flags or [])}
        supervision = Supervision(id=rec.id, recording_id=rec.id, start=0.0, duration=duration, channel=0,
                                  text=text.strip(), language=rec.language, speaker=speaker.id,
                                  gender=speaker.gender or "unknown", custom=custom)
        entries.append(_Entry(recording, supervision, speaker.id, split))
    if set(labels) - seen:
        skipped["no_speaker"] += len(set(labels) - seen)
    return entries, skipped


def _write_tree(tmp: Path, entries: list[_Entry], splits: list[str]) -> None:
    for split in splits:
        chosen = [e for e in entries if e.split == split]
        write_jsonl(tmp / split / RECORDINGS, (e.recording for e in chosen))
        write_jsonl(tmp / split / SUPERVISIONS, (e.supervision for e in chosen))


def write_meta(root: Path, version: DatasetVersion) -> None:
    """(Re)write ``dataset.json`` atomically from the catalog row."""
    meta = {"id": version.id, "name": version.name, "content_hash": version.content_hash,
            "parent": version.parent_id, "created_at": aware(version.created_at).isoformat(),
            "counts": version.counts, "recipe": version.recipe, "redactions": version.redactions}
    tmp = root / f".{DATASET_FILE}.tmp"
    tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, root / DATASET_FILE)


def build_dataset(
    session: Session,
    store: AudioStore,
    out_root: str | Path,
    *,
    name: str,
    parent: str | None = None,
    split_ratios: dict[str, float] | None = None,
    seed: int = 0,
    include_simulated: bool = True,
    now: datetime | None = None,
) -> DatasetVersion:
    """Freeze the catalog's accepted transcripts into ``<out_root>/ds-<hash[:12]>``.

    ``split_ratios`` (default train/dev/test 0.8/0.1/0.1) are shares of speakers, not of utterances.
    ``parent`` defaults to the newest earlier version with the same ``name``. ``include_simulated`` False
    leaves out the simulated labeler's transcripts. Consent is judged at ``now`` (default: the current time).
    Returns the existing version when the same manifest was frozen before.

    Raises:
        ValueError: bad ratios, an unknown parent, or nothing to freeze.
    """
    ratios = dict(split_ratios or DEFAULT_SPLITS)
    if not ratios or any(v <= 0 for v in ratios.values()) or any(not k or "/" in k for k in ratios):
        raise ValueError(f"split_ratios must map split names to positive shares, got {ratios}")
    if parent is not None and session.get(DatasetVersion, parent) is None:
        raise ValueError(f"parent dataset version {parent!r} does not exist")
    now = now or utcnow()
    entries, skipped = _entries(session, store, ratios, seed, include_simulated, now)
    if not entries:
        raise ValueError("nothing to freeze: no reviewed label with a usable transcript from a "
                         f"speaker who consented to training (skipped: {dict(skipped) or 'no labels at all'})")
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = out_root / f".tmp-{uuid.uuid4().hex[:12]}"
    recipe = {"split_ratios": ratios, "seed": seed, "split_rule": "sha256(seed:split_key) -> [0,1) by ratio",
              "split_key": "source:external_id, else speaker_id",
              "labels": "collection.labeling.reviewed_transcripts", "include_simulated": include_simulated,
              "skipped": dict(sorted(skipped.items()))}
    try:
        _write_tree(tmp, entries, list(ratios))
        content_hash = manifest_hash(tmp)
        version_id = f"ds-{content_hash[:12]}"
        final = out_root / version_id
        version = session.scalar(select(DatasetVersion).where(DatasetVersion.content_hash == content_hash))
        if version is None:
            version = _add_version(session, version_id, name, content_hash, final, parent, recipe, tmp, entries)
        elif Path(version.manifest_uri).is_dir():
            log.info("dataset version %s already frozen at %s", version.id, version.manifest_uri)
            return version
        else:  # the row survived its directory (removed by hand): write the same tree again here
            version.manifest_uri = str(final.resolve())
        if final.exists():
            log.info("dataset version %s already frozen at %s", version.id, final)
        else:
            write_meta(tmp, version)
            try:
                tmp.rename(final)
            except OSError:  # a concurrent build of the same version renamed first
                if not final.exists():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return version


def _add_version(session: Session, version_id: str, name: str, content_hash: str, final: Path, parent: str | None,
                 recipe: dict[str, Any], tmp: Path, entries: list[_Entry]) -> DatasetVersion:
    if parent is None:
        parent = session.scalar(select(DatasetVersion.id).where(DatasetVersion.name == name)
                                .order_by(DatasetVersion.created_at.desc(), DatasetVersion.id.desc()).limit(1))
    version = DatasetVersion(id=version_id, name=name, content_hash=content_hash, manifest_uri=str(final.resolve()),
                             parent_id=parent, counts=count_version(tmp), recipe=recipe, redactions=[])
    try:
        with session.begin_nested():  # a concurrent build may insert the same hash meanwhile
            session.add(version)
            session.flush()
            session.add_all(DatasetMember(dataset_id=version_id, recording_id=e.recording.id,
                                          speaker_id=e.speaker_id, split=e.split) for e in entries)
    except IntegrityError:
        return session.scalars(select(DatasetVersion).where(DatasetVersion.content_hash == content_hash)).one()
    log.info("dataset version %s: %d utterances from %d speakers", version_id, len(entries),
             len({e.speaker_id for e in entries}))
    return version


def list_versions(session: Session) -> list[DatasetVersion]:
    """Every dataset version, oldest first."""
    return list(session.scalars(select(DatasetVersion).order_by(DatasetVersion.created_at, DatasetVersion.id)))


def speakers_by_split(session: Session, version_id: str) -> dict[str, set[str]]:
    """split -> the speaker ids a version holds (from its member rows)."""
    out: dict[str, set[str]] = defaultdict(set)
    for split, speaker in session.execute(select(DatasetMember.split, DatasetMember.speaker_id)
                                          .where(DatasetMember.dataset_id == version_id)):
        out[split].add(speaker)
    return dict(out)

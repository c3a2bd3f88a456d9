"""Device credentials: one key per device (hashed at rest), rotation with an overlap window, revocation.

A key reads ``vlk_<43 url-safe characters>`` (256 random bits). Only its sha256 is stored: a
key this random cannot be guessed from the hash, so the slow password hashes users get would
only add milliseconds to every request. After :func:`rotate_key` the old key keeps working for
``overlap`` (firmware fleets pick up a new key over hours), then stops; :func:`revoke_device`
stops every key at once.

A device also carries its owner's profile (optional, from the account): ``region`` (the dialect region of
the address), ``age_band`` and ``environment`` (where the speaker stands). Production utterances copy it as
their slice, so the values come from the vocabularies the studio and the data plans use
(:func:`profile_vocabulary`); :func:`set_device_profile` changes it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from collection.models import AuditEntry, Device, DeviceKey, aware, utcnow

KEY_PREFIX = "vlk_"
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
DEFAULT_OVERLAP = timedelta(hours=24)
#: the owner profile's fields, in the order they are shown (``region`` becomes an utterance's ``dialect`` slice)
PROFILE_FIELDS = ("region", "age_band", "environment")


class DeviceError(ValueError):
    """``code``: not_found / conflict / invalid (the API maps them to 404 / 409 / 422)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class IssuedKey:
    device_id: str
    key: str  # shown once; only its hash is kept
    old_key_expires_at: datetime | None = None


def audit(session: Session, actor: str, action: str, device_id: str, **detail: object) -> None:
    session.add(AuditEntry(actor=actor, action=action, subject_digest=None, detail={"device_id": device_id, **detail}))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def _new_key(session: Session, device_id: str) -> str:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(DeviceKey(device_id=device_id, key_hash=hash_key(key)))
    return key


def profile_vocabulary() -> dict[str, tuple[str, ...]]:
    """The valid values of each profile field: the dialect regions the data plans know (``standard`` plus
    the grammars' dialects), the studio's age bands and acoustic environments."""
    from collection.dataplan import known_dialects
    from collection.studio.environments import ENVIRONMENTS
    from collection.studio.personas import AGE_BANDS

    return {"region": known_dialects(), "age_band": AGE_BANDS, "environment": tuple(ENVIRONMENTS)}


def check_profile(profile: Mapping[str, str | None]) -> dict[str, str | None]:
    """``profile`` with every field checked against :func:`profile_vocabulary` (None or "" = unknown).
    Raises DeviceError(invalid) naming the field and its valid values."""
    unknown = sorted(set(profile) - set(PROFILE_FIELDS))
    if unknown:
        raise DeviceError("invalid", f"unknown profile field(s) {unknown}; valid: {list(PROFILE_FIELDS)}")
    vocab = profile_vocabulary()
    out: dict[str, str | None] = {}
    for name, value in profile.items():
        value = value or None
        if value is not None and value not in vocab[name]:
            raise DeviceError("invalid", f"{name} {value!r} is not one of {list(vocab[name])}")
        out[name] = value
    return out


def register_device(session: Session, device_id: str, device_type: str = "speaker", actor: str = "system",
                    profile: Mapping[str, str | None] | None = None) -> IssuedKey:
    """A new device and its first key; ``profile``: the owner's region / age_band / environment (any of
    them, optional). Raises DeviceError(conflict) when the id is taken, (invalid) for a bad id, type or
    profile value."""
    if not DEVICE_ID.match(device_id or ""):
        raise DeviceError("invalid", f"device id {device_id!r} must be 1-64 letters, digits or . _ : - "
                                     "(starting with a letter or digit)")
    if not re.match(r"^[a-z0-9_-]{1,32}$", device_type or ""):
        raise DeviceError("invalid", f"device type {device_type!r} must be 1-32 of a-z 0-9 _ -")
    owner = check_profile(profile or {})
    try:
        with session.begin_nested():
            session.add(Device(id=device_id, device_type=device_type, **owner))
            session.flush()
    except IntegrityError as e:
        raise DeviceError("conflict", f"device {device_id!r} is already registered; rotate its key instead") from e
    key = _new_key(session, device_id)
    audit(session, actor, "device_register", device_id, device_type=device_type, profile=sorted(owner))
    return IssuedKey(device_id, key)


def set_device_profile(session: Session, device_id: str, changes: Mapping[str, str | None],
                       actor: str = "system") -> Device:
    """Change the owner's profile: each field in ``changes`` is set (None or "" clears it); fields left out
    stay. Utterances already served keep the slice they were recorded with. The audit entry names the
    fields changed, not their values (an age band is personal data)."""
    device = session.get(Device, device_id)
    if device is None:
        raise DeviceError("not_found", f"no device {device_id!r}")
    owner = check_profile(changes)
    changed = sorted(name for name, value in owner.items() if getattr(device, name) != value)
    for name in changed:
        setattr(device, name, owner[name])
    if changed:
        audit(session, actor, "device_profile", device_id, fields=changed)
    session.flush()
    return device


def device_profile(device: Device) -> dict[str, str | None]:
    """``{region, age_band, environment}`` of a device."""
    return {name: getattr(device, name) for name in PROFILE_FIELDS}


def _live_device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise DeviceError("not_found", f"no device {device_id!r}")
    if device.revoked_at is not None:
        raise DeviceError("conflict", f"device {device_id!r} was revoked on {device.revoked_at:%Y-%m-%d}; "
                                      "register it again under a new id")
    return device


def rotate_key(session: Session, device_id: str, overlap: timedelta = DEFAULT_OVERLAP,
               actor: str = "system", now: datetime | None = None) -> IssuedKey:
    """A new key; every older key of the device stops working after ``overlap`` (0 = at once)."""
    if overlap < timedelta(0):
        raise DeviceError("invalid", "the overlap window cannot be negative")
    _live_device(session, device_id)
    expires = (now or utcnow()) + overlap
    session.execute(update(DeviceKey)
                    .where(DeviceKey.device_id == device_id,
                           (DeviceKey.expires_at.is_(None)) | (DeviceKey.expires_at > expires))
                    .values(expires_at=expires))
    key = _new_key(session, device_id)
    audit(session, actor, "device_rotate", device_id, overlap_s=overlap.total_seconds())
    return IssuedKey(device_id, key, expires)


def revoke_device(session: Session, device_id: str, actor: str = "system") -> None:
    """Every key of the device stops working now. Revoking twice is harmless."""
    device = session.get(Device, device_id)
    if device is None:
        raise DeviceError("not_found", f"no device {device_id!r}")
    if device.revoked_at is None:
        device.revoked_at = utcnow()
        audit(session, actor, "device_revoke", device_id)


def authenticate_device(session: Session, key: str | None, now: datetime | None = None) -> Device | None:
    """The device a key belongs to, or None (unknown, expired, or the device revoked)."""
    if not key or not key.startswith(KEY_PREFIX) or len(key) > 128:
        return None
    row = session.execute(select(DeviceKey, Device).join(Device, Device.id == DeviceKey.device_id)
                          .where(DeviceKey.key_hash == hash_key(key))).first()
    if row is None:
        return None
    dkey, device = row
    if device.revoked_at is not None or (dkey.expires_at is not None and aware(dkey.expires_at) <= (now or utcnow())):
        return None
    return device

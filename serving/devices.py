"""Device credentials: one key per device (hashed at rest), rotation with an overlap window, revocation.

A key reads ``vlk_<43 url-safe characters>`` (256 random bits). Only its sha256 is stored: a
key this random cannot be guessed from the hash, so the slow password hashes users get would
only add milliseconds to every request. After :func:`rotate_key` the old key keeps working for
``overlap`` (firmware fleets pick up a new key over hours), then stops; :func:`revoke_device`
stops every key at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from collection.models import AuditEntry, Device, DeviceKey, aware, utcnow

KEY_PREFIX = "vlk_"
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
DEFAULT_OVERLAP = timedelta(hours=24)


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


def register_device(session: Session, device_id: str, device_type: str = "speaker", actor: str = "system") -> IssuedKey:
    """A new device and its first key. Raises DeviceError(conflict) when the id is taken."""
    if not DEVICE_ID.match(device_id or ""):
        raise DeviceError("invalid", f"device id {device_id!r} must be 1-64 letters, digits or . _ : - "
                                     "(starting with a letter or digit)")
    if not re.match(r"^[a-z0-9_-]{1,32}$", device_type or ""):
        raise DeviceError("invalid", f"device type {device_type!r} must be 1-32 of a-z 0-9 _ -")
    try:
        with session.begin_nested():
            session.add(Device(id=device_id, device_type=device_type))
            session.flush()
    except IntegrityError as e:
        raise DeviceError("conflict", f"device {device_id!r} is already registered; rotate its key instead") from e
    key = _new_key(session, device_id)
    audit(session, actor, "device_register", device_id, device_type=device_type)
    return IssuedKey(device_id, key)


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

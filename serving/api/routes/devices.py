"""Device credentials and owner profiles, for admins (``Authorization: Bearer <admin token>`` from ``/api/token``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from serving.api.deps import AdminUser, SessionDep
from serving.devices import (
    DeviceError,
    device_profile,
    register_device,
    revoke_device,
    rotate_key,
    set_device_profile,
)

router = APIRouter(prefix="/v1/admin/devices", tags=["device admin"])
STATUS = {"not_found": 404, "conflict": 409, "invalid": 422}


PROFILE_HELP = {"region": "dialect region of the owner's address, e.g. standard, gyeongsang",
                "age_band": "owner's age band, e.g. 30s, 70s+",
                "environment": "where the speaker stands, e.g. quiet, tv, kitchen, far_field"}


class ProfileIn(BaseModel):
    """The owner's profile; each field optional (null = unknown). Values are checked against the
    vocabularies the data plans use; a wrong one is a 422 naming the valid values."""

    region: str | None = Field(default=None, max_length=32, description=PROFILE_HELP["region"])
    age_band: str | None = Field(default=None, max_length=16, description=PROFILE_HELP["age_band"])
    environment: str | None = Field(default=None, max_length=32, description=PROFILE_HELP["environment"])


class DeviceIn(ProfileIn):
    device_id: str = Field(max_length=64)
    device_type: str = Field(default="speaker", max_length=32)


class ProfileOut(BaseModel):
    device_id: str
    device_type: str
    region: str | None
    age_band: str | None
    environment: str | None


class RotateIn(BaseModel):
    overlap_s: float = Field(default=24 * 3600, ge=0, le=30 * 24 * 3600,
                             description="how long the old key keeps working")


class KeyOut(BaseModel):
    device_id: str
    key: str = Field(description="shown once; store it on the device")
    old_key_expires_at: datetime | None = None


def _error(e: DeviceError) -> HTTPException:
    return HTTPException(STATUS.get(e.code, 422), str(e))


@router.post("", response_model=KeyOut, status_code=201)
def register(body: DeviceIn, user: AdminUser, session: SessionDep) -> KeyOut:
    try:
        issued = register_device(session, body.device_id, body.device_type, actor=user.username,
                                 profile=body.model_dump(include={"region", "age_band", "environment"},
                                                         exclude_none=True))
    except DeviceError as e:
        raise _error(e) from e
    session.commit()
    return KeyOut(device_id=issued.device_id, key=issued.key)


@router.post("/{device_id}/rotate", response_model=KeyOut)
def rotate(device_id: str, body: RotateIn, user: AdminUser, session: SessionDep) -> KeyOut:
    try:
        issued = rotate_key(session, device_id, timedelta(seconds=body.overlap_s), actor=user.username)
    except DeviceError as e:
        raise _error(e) from e
    session.commit()
    return KeyOut(device_id=issued.device_id, key=issued.key, old_key_expires_at=issued.old_key_expires_at)


@router.post("/{device_id}/revoke", status_code=204)
def revoke(device_id: str, user: AdminUser, session: SessionDep) -> None:
    try:
        revoke_device(session, device_id, actor=user.username)
    except DeviceError as e:
        raise _error(e) from e
    session.commit()


@router.patch("/{device_id}/profile", response_model=ProfileOut)
def update_profile(device_id: str, body: ProfileIn, user: AdminUser, session: SessionDep) -> ProfileOut:
    """Change the owner's profile: fields sent are set (null clears one), fields left out stay. Requests
    already served keep the slice they were served with."""
    try:
        device = set_device_profile(session, device_id, body.model_dump(exclude_unset=True), actor=user.username)
    except DeviceError as e:
        raise _error(e) from e
    session.commit()
    return ProfileOut(device_id=device.id, device_type=device.device_type, **device_profile(device))

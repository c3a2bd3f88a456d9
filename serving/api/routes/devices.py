"""Device credentials, for admins (``Authorization: Bearer <admin token>`` from ``/api/token``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from serving.api.deps import AdminUser, SessionDep
from serving.devices import DeviceError, register_device, revoke_device, rotate_key

router = APIRouter(prefix="/v1/admin/devices", tags=["device admin"])
STATUS = {"not_found": 404, "conflict": 409, "invalid": 422}


class DeviceIn(BaseModel):
    device_id: str = Field(max_length=64)
    device_type: str = Field(default="speaker", max_length=32)


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
        issued = register_device(session, body.device_id, body.device_type, actor=user.username)
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

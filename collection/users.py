"""People who work in the catalog (labelers, reviewers, admins): accounts, passwords and signed tokens.

Passwords are stored as ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>`` (:func:`hashlib.scrypt`, a random
16-byte salt per user). Tokens are ``<payload>.<signature>``: the payload is base64url JSON
``{"sub": id, "exp": unix seconds, "aud": purpose}`` and the signature HMAC-SHA256 over it with the
deployment secret, so a token can be checked without a database round trip and cannot be forged or
extended. ``aud`` separates a labeler's login token from a recording-page contributor's token: one can
never stand in for the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import ROLES, User

# scrypt cost: 2**14 × 8 × 128 B = 16 MiB and ~50 ms per hash; the parameters travel with the hash,
# so raising them later keeps old hashes verifiable.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_CHARS = 8
USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")
DEFAULT_TOKEN_SECONDS = 8 * 3600
USER_AUDIENCE = "user"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(digest)
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected))
    except ValueError:  # malformed hash string
        return False
    return hmac.compare_digest(got, expected)


def _check_new_user(username: str, role: str, password: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; valid: {list(ROLES)}")
    if not username or len(username) > 64 or set(username) - USERNAME_CHARS:
        raise ValueError(f"username {username!r} must be 1-64 characters of a-z, 0-9, '.', '_' or '-'")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"password must have at least {MIN_PASSWORD_CHARS} characters")


def create_user(session: Session, username: str, role: str, password: str, *, simulated: bool = False) -> User:
    """The user ``username``, created with ``role`` on first call. Idempotent: a second call returns the
    existing user (password unchanged) when the role matches and raises ValueError when it differs."""
    username = username.strip().lower()
    _check_new_user(username, role, password)
    if (existing := _existing(session, username, role)) is not None:
        return existing
    user = User(username=username, role=role, password_hash=hash_password(password), simulated=simulated)
    try:
        with session.begin_nested():  # two admins adding the same name at once: the unique index decides
            session.add(user)
    except IntegrityError:
        return _existing(session, username, role)
    return user


def _existing(session: Session, username: str, role: str) -> User | None:
    existing = session.scalar(select(User).where(User.username == username))
    if existing is not None and existing.role != role:
        raise ValueError(f"user {username!r} already exists with role {existing.role!r}, not {role!r}")
    return existing


def get_user(session: Session, user_id: str) -> User | None:
    """The active user with this id, or None (unknown or deactivated)."""
    user = session.get(User, user_id)
    return user if user is not None and user.active else None


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.role, User.username)))


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user whose password matches, else None (the caller cannot tell which part was wrong)."""
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None or not user.active:
        verify_password(password, hash_password("timing-equaliser"))  # same cost for unknown names
        return None
    return user if verify_password(password, user.password_hash) else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(payload: str, secret: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())


def issue_token(user_id: str, secret: str, max_age_s: int = DEFAULT_TOKEN_SECONDS, *,
                audience: str = USER_AUDIENCE) -> str:
    """A signed token naming ``user_id`` that expires ``max_age_s`` seconds from now."""
    body = {"sub": user_id, "exp": int(time.time()) + int(max_age_s), "aud": audience}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_sign(payload, secret)}"


def verify_token(token: str | None, secret: str, *, audience: str = USER_AUDIENCE) -> str | None:
    """The id inside a valid token for ``audience``; None for a missing, malformed, forged, expired or
    other-audience token."""
    if not token or token.count(".") != 1 or not token.isascii():  # compare_digest refuses non-ASCII str
        return None
    payload, signature = token.split(".")
    if not hmac.compare_digest(signature, _sign(payload, secret)):
        return None
    try:
        body = json.loads(_unb64(payload))
        subject, expires, aud = body["sub"], int(body["exp"]), body["aud"]
    except (ValueError, KeyError, TypeError):
        return None
    if aud != audience or expires <= time.time() or not isinstance(subject, str):
        return None
    return subject

"""Users and bearer tokens: a token is shown once, only its SHA-256 is stored.

Tokens are 256 random bits from ``secrets``, so a plain SHA-256 (no salt, no slow hash) cannot
be reversed and lets the server find the user by an indexed lookup of the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from prunehive.platform.store.jobs import JobStore, StoreError
from prunehive.platform.store.models import User

TOKEN_PREFIX = "phk_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    is_admin: bool

    def may_see(self, owner: str | None) -> bool:
        return self.is_admin or owner == self.name


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def add_user(store: JobStore, name: str, admin: bool = False) -> str:
    """Create a user and return their token (the only time it exists in clear)."""
    if not NAME_PATTERN.match(name):
        raise ValueError(f"name: {name!r} must be 1-64 letters, digits or _.@- (starting with a letter or digit)")
    token = new_token()
    try:
        with store.session() as s:
            s.add(User(name=name, token_hash=hash_token(token), is_admin=admin))
    except StoreError as exc:
        if isinstance(exc.__cause__, IntegrityError):
            raise ValueError(f"name: user {name!r} already exists") from None
        raise
    return token


def authenticate(store: JobStore, token: str) -> Caller | None:
    """The user holding this token, or None. Compared in constant time after the indexed lookup."""
    digest = hash_token(token)
    with store.session() as s:
        user = s.scalars(select(User).where(User.token_hash == digest)).first()
        if user is None or not hmac.compare_digest(user.token_hash, digest):
            return None
        return Caller(user.name, user.is_admin)

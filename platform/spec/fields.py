"""What every part of the spec shares: the error type, strict models, and the "one of" check."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict


class SpecError(ValueError):
    """A spec that cannot run; the message names the field."""


class Strict(BaseModel):
    """A spec section: an unknown field is an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


def one_of(value: str, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return value

"""What every section of the settings shares: the strict model each one is, and the
check of an e-mail address setting."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A settings section: an unknown key is an error (a typo is never ignored), and it never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def email_address(value: str) -> str:
    """A bare e-mail address (no display name), checked by email-validator without DNS:
    a syntax check, so loading the configuration never waits on the network."""
    from email_validator import EmailNotValidError, validate_email  # ~30 ms: only when a config is loaded

    try:
        validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not an e-mail address: {exc}") from None
    return value

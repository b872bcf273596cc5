"""What every section of the settings shares: the strict, frozen struct each one is, how a
TOML table becomes one (every problem found, not only the first), and the check of an
e-mail address setting.

msgspec types and converts each value (``msgspec.convert``, constraints as
``Annotated[..., msgspec.Meta(...)]``); it stops at the first problem of a whole
document, so :func:`structure` walks the tables and converts one value at a time, which
lets a loaded file report every bad setting at once. A section's own checks (an address,
a URL, a time zone) are named in its ``checks``: a function per field that returns the
value (perhaps normalised) or raises ``ValueError`` saying what is wrong.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import msgspec

Location = tuple[str, ...]
Checks = Mapping[str, Callable[[Any], Any]]  # a field's name -> its check


class Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A settings section: an unknown key is an error (a typo is never ignored), and it never changes.

    Each section says ``frozen=True, kw_only=True`` again: msgspec passes them on to
    subclasses, but a type checker reads them from each class's own line."""

    checks: ClassVar[Checks] = {}


S = TypeVar("S", bound="Strict")


@dataclass(frozen=True)
class Problem:
    """One bad setting: where (the keys from the file's top), what, and perhaps how to fix it."""

    location: Location
    message: str
    hint: str | None = None


def structure(cls: type[S], data: object, problems: list[Problem], location: Location = ()) -> S | None:
    """``data`` (a TOML table) as a ``cls``, or None after adding each of its problems to ``problems``."""
    if not isinstance(data, dict):
        problems.append(_not_a_table(location, data))
        return None
    fields = msgspec.structs.fields(cls)
    known = [field.name for field in fields]
    found = len(problems)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            problems.append(Problem((*location, str(key)), "unknown setting", hint))
    values: dict[str, Any] = {}
    for field in fields:
        here = (*location, field.name)
        if field.name not in data:
            if field.required:
                problems.append(Problem(here, "required setting is missing"))
            continue
        value = _value(field.type, data[field.name], problems, here)
        if value is _BAD:
            continue
        check = cls.checks.get(field.name)
        if check is not None and value is not None:
            try:
                value = check(value)
            except ValueError as exc:
                problems.append(Problem(here, str(exc)))
                continue
        values[field.name] = value
    if len(problems) > found:
        return None
    return cls(**values)


def _not_a_table(location: Location, value: object) -> Problem:
    return Problem(location, f"must be a table ([{'.'.join(location)}]), not {value!r}")


_BAD = object()  # a value that could not be converted (its problem is already reported)


def _value(kind: Any, raw: object, problems: list[Problem], location: Location) -> Any:
    section = _section_type(kind)
    if section is not None and raw is not None:
        return _or_bad(structure(section, raw, problems, location))
    if typing.get_origin(kind) is dict and _section_type(typing.get_args(kind)[1]) is not None:
        if not isinstance(raw, dict):
            problems.append(_not_a_table(location, raw))
            return _BAD
        section = typing.get_args(kind)[1]
        found = len(problems)
        tables = {key: structure(section, table, problems, (*location, str(key))) for key, table in raw.items()}
        return tables if len(problems) == found else _BAD
    try:
        return msgspec.convert(raw, kind, dec_hook=_paths)
    except msgspec.ValidationError as exc:
        problems.append(Problem(location, _in_words(str(exc), raw)))
        return _BAD


# msgspec names TOML's kinds of value by their Python types; staff read these words instead.
_KINDS = {
    "`int`": "a whole number",
    "`float`": "a number",
    "`str`": "text in quotes",
    "`bool`": "true or false",
    "`array`": "a list [...]",
    "`object`": "a table",
    "`null`": "nothing",
    "`Path`": "a file path in quotes",
}


def _in_words(message: str, raw: object) -> str:
    """msgspec's ``Expected `int` >= 1`` as ``expected a whole number >= 1, got 0``."""
    message = message.partition(", got ")[0]  # its kind of value; the value itself says more
    for kind, words in _KINDS.items():
        message = message.replace(kind, words)
    return f"{message[:1].lower()}{message[1:]}, got {raw!r}"


def _or_bad(value: object) -> object:
    return _BAD if value is None else value


def _section_type(kind: Any) -> type[Strict] | None:
    """The settings section ``kind`` names, alone or or-ed with None."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    sections = [option for option in options if isinstance(option, type) and issubclass(option, Strict)]
    return sections[0] if sections else None


def _paths(kind: type, raw: object) -> object:
    if kind is Path and isinstance(raw, str):
        return Path(raw)
    raise TypeError(f"Expected `{getattr(kind, '__name__', kind)}`, got {raw!r}")


def http_url(value: str) -> bool:
    """Whether ``value`` is an http(s) URL with a host."""
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def email_address(value: str) -> str:
    """A bare e-mail address (no display name), checked by email-validator without DNS:
    a syntax check, so loading the configuration never waits on the network."""
    from email_validator import EmailNotValidError, validate_email  # ~30 ms: only when a config is loaded

    try:
        validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not an e-mail address: {exc}") from None
    return value

"""Checks on the raw values a command brings, before any rule of the plan.

The web layer validates its input with msgspec too, but the domain does not
trust any caller: a command from the command line, a test or a later API
goes through these same checks.
"""

from __future__ import annotations

import math
import re
from datetime import date

from domain.errors import InvalidValue

SHORT_TEXT = 200
LONG_TEXT = 4000


def required_text(value: object, field: str, limit: int = SHORT_TEXT) -> str:
    text = optional_text(value, field, limit)
    if not text:
        raise InvalidValue(field, "%(field)s must not be empty.")
    return text


def optional_text(value: object, field: str, limit: int = LONG_TEXT) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidValue(field, "%(field)s must be text.")
    if has_forbidden_character(value):
        raise InvalidValue(field, "%(field)s contains a forbidden character.")
    text = plain_text(value)
    if len(text) > limit:
        raise InvalidValue(
            field,
            "%(field)s is too long: at most %(limit)s characters.",
            limit=limit,
        )
    return text


def chosen(value: object, field: str) -> object:
    """A choice from a list (an item, a value of a vocabulary): nothing chosen is asked for."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidValue(field, "%(field)s: choose one.")
    return value


def as_date(value: object, field: str) -> date:
    """A calendar date, given as a `date` or as ISO text (2026-11-23)."""
    if isinstance(value, date) and not hasattr(value, "hour"):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise InvalidValue(field, "%(field)s must be a date (YYYY-MM-DD).")


def as_number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidValue(field, "%(field)s must be a number.")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidValue(field, "%(field)s must be a finite number.")
    return number


def as_revision(value: object, field: str = "revision") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue(field, "%(field)s must be a whole number of 0 or more.")
    return value


def as_identifier(value: object, field: str) -> str:
    """An id (of a person, an organisation, an item): printable, as a form sends it."""
    if not isinstance(value, str) or not value.strip() or len(value) > SHORT_TEXT or not value.isprintable():
        raise InvalidValue(field, "%(field)s must be a non-empty identifier.")
    return value.strip()


def as_command_id(value: object) -> str:
    """A sender's command id, taken exactly as given: it is how a repeat is recognised. It
    is printable (a form sends a UUID): no control character, NUL or lone surrogate."""
    if (not isinstance(value, str) or not value or len(value) > SHORT_TEXT or value != value.strip()
            or not value.isprintable()):
        raise InvalidValue(
            "command_id", "%(field)s must be a non-empty identifier without surrounding spaces."
        )
    return value


_FORBIDDEN = re.compile(
    "[\x00"  # NUL: no database text holds it
    "\ud800-\udfff]"  # a lone UTF-16 surrogate (JSON can carry one): no UTF-8 can store it
)
_LINE_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
"""What breaks a line besides a line feed: a textarea's CRLF, a word processor's manual line
break (vertical tab), form feed, the next-line and line and paragraph separators."""
_UNSEEN = re.compile(
    "[\x01-\x08\x0e-\x1f\x7f-\x84\x86-\x9f"  # other control characters (tab and line feed stay)
    "\u202a-\u202e\u2066-\u2069"  # bidirectional embeddings, overrides and isolates
    "\u00ad\u180e\u200b\u2060\ufeff]"  # soft hyphen, invisible spaces and word joiners
)


def has_forbidden_character(text: str) -> bool:
    """Whether ``text`` holds a character no text can be stored with."""
    return _FORBIDDEN.search(text) is not None


def plain_text(text: str) -> str:
    """``text`` as it shows, ends stripped: every line break a line feed, and without the
    characters that are not seen or that make a text show other than it reads ("Matti
    \u202eikkremisE" shows as "Matti Esimerkki", "Mat\u00adti" as "Matti", and a search for
    the name finds neither). Pasted text keeps its lines; zero-width joiners (emoji, some
    scripts) and the left-to-right and right-to-left marks stay.

    Regular expressions: a generator over the characters took about 12 µs for a note of
    240 characters, on every command."""
    return _UNSEEN.sub("", _LINE_BREAKS.sub("\n", text)).strip()

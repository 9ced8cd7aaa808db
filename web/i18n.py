"""Languages of the interface: gettext catalogues, the user's language, dates.

The catalogues are ``web/locale/{fi,sv,en}/LC_MESSAGES/messages.po``; their compiled ``.mo``
files are not kept in git and are made by :func:`ensure_compiled` when the application
starts (or by ``pybabel compile -d web/locale``). See ``web/locale/README.md``.

In Python code, translate with the request's language::

    _ = translations(language_of(request)).gettext
    message = _("Something went wrong.")

and mark strings that are translated later (module constants) with :func:`N_`.
"""

from __future__ import annotations

import datetime as dt
import gettext as _gettext
import io
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Final

from babel.dates import format_date as _babel_format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from domain.values import FINLAND

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection

__all__ = (
    "DEFAULT_LANGUAGE",
    "DOMAIN",
    "LANGUAGES",
    "LANGUAGE_COOKIE",
    "LANGUAGE_NAMES",
    "LOCALE_DIR",
    "N_",
    "ensure_compiled",
    "format_date",
    "format_moment",
    "language_from_accept_language",
    "language_of",
    "translations",
)

#: Languages of the interface, Finnish first.
LANGUAGES: Final = ("fi", "sv", "en")
DEFAULT_LANGUAGE: Final = "fi"
#: Each language's name in that language (never translated).
LANGUAGE_NAMES: Final = {"fi": "suomi", "sv": "svenska", "en": "English"}
#: Cookie that keeps the language chosen with the language switch.
LANGUAGE_COOKIE: Final = "lang"
DOMAIN: Final = "messages"
LOCALE_DIR: Final = Path(__file__).resolve().parent / "locale"

# CLDR locales for formatting: the Finnish variants of each language
# (Swedish and English as written in Finland).
_FORMAT_LOCALES: Final = {"fi": "fi_FI", "sv": "sv_FI", "en": "en_FI"}
_MEDIUM: Final = {"sv": "short"}
"""The format of an ordinary date where CLDR's ``medium`` is not how it is written in Finland."""

logger = logging.getLogger(__name__)


def N_(message: str) -> str:  # noqa: N802 - the conventional gettext marker name
    """Mark ``message`` for extraction without translating it now."""
    return message


def ensure_compiled(locale_dir: Path = LOCALE_DIR) -> list[Path]:
    """Compile every ``messages.po`` whose ``.mo`` is missing or older; return those written.

    A read-only installation is not an error: :func:`translations` then compiles the
    catalogue in memory.
    """
    written = []
    for po_path in sorted(locale_dir.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        mo_path = po_path.with_suffix(".mo")
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        try:
            _write_atomically(mo_path, _compile(po_path))
        except OSError as error:
            logger.warning("could not write %s (%s); compiling it in memory instead", mo_path, error)
            continue
        written.append(mo_path)
    if written:
        translations.cache_clear()
    return written


@lru_cache(maxsize=None)
def translations(language: str) -> _gettext.NullTranslations:
    """The gettext catalogue of ``language`` (one of :data:`LANGUAGES`)."""
    if language not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}")
    po_path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    mo_path = po_path.with_suffix(".mo")
    if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
        with mo_path.open("rb") as mo_file:
            return _gettext.GNUTranslations(mo_file)
    return _gettext.GNUTranslations(io.BytesIO(_compile(po_path)))


def language_of(connection: ASGIConnection) -> str:
    """The language to answer in: the ``lang`` cookie, else Accept-Language, else Finnish."""
    chosen = connection.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return language_from_accept_language(connection.headers.get("accept-language", ""))


def language_from_accept_language(header: str) -> str:
    """The best of :data:`LANGUAGES` for an ``Accept-Language`` header, else the default."""
    ranked = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                continue
        primary = tag.strip().split("-")[0].lower()
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else DEFAULT_LANGUAGE


def format_date(value: dt.date, language: str, format: str = "medium") -> str:  # noqa: A002
    """A date as written in ``language`` in Finland: ``23.11.2026`` in Finnish and in Swedish.

    ``format`` is babel's: ``short``, ``medium`` (default), ``long``, ``full`` or a pattern.
    Swedish as written in Finland numbers its dates (CLDR's sv_FI ``medium`` is "23 nov. 2026").
    """
    if format == "medium":
        format = _MEDIUM.get(language, format)  # noqa: A001
    if type(value) is dt.date:  # not a datetime: its day depends on its time zone, which == ignores
        return _formatted_day(value, language, format)
    return _babel_format_date(value, format=format, locale=_FORMAT_LOCALES.get(language, "fi_FI"))


def format_moment(value: dt.datetime, language: str) -> str:
    """A moment in Finnish time as written in ``language`` in Finland: ``3.12.2026 20.34``,
    ``3.12.2026 kl. 20.34``, ``3 Dec 2026 20:34``."""
    local = value.astimezone(FINLAND)
    day = format_date(local.date(), language)
    if language == "fi":
        return f"{day} {local:%H.%M}"
    if language == "sv":
        return f"{day} kl. {local:%H.%M}"
    return f"{day} {local:%H:%M}"


@lru_cache(maxsize=8192)
def _formatted_day(value: dt.date, language: str, format: str) -> str:  # noqa: A002
    """A day as :func:`format_date` writes it, remembered: babel takes tens of microseconds a
    date, and a plan page writes the same few days many times over."""
    return _babel_format_date(value, format=format, locale=_FORMAT_LOCALES.get(language, "fi_FI"))


def _compile(po_path: Path) -> bytes:
    with po_path.open("rb") as po_file:
        catalog = read_po(po_file, locale=po_path.parent.parent.name, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    return buffer.getvalue()


def _write_atomically(path: Path, content: bytes) -> None:
    draft = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    draft.write_bytes(content)
    os.replace(draft, path)

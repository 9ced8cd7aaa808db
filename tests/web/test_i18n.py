"""Unit tests of web.i18n: compiling catalogues, Accept-Language, dates."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from web.i18n import (
    LOCALE_DIR,
    ensure_compiled,
    format_date,
    language_from_accept_language,
    translations,
)


def test_ensure_compiled_compiles_missing_and_stale_catalogues(tmp_path: Path) -> None:
    locale_dir = tmp_path / "locale"
    shutil.copytree(LOCALE_DIR, locale_dir, ignore=shutil.ignore_patterns("*.mo"))

    written = ensure_compiled(locale_dir)
    assert sorted(path.parent.parent.name for path in written) == ["en", "fi", "sv"]
    assert all(path.suffix == ".mo" and path.stat().st_size > 0 for path in written)

    assert ensure_compiled(locale_dir) == []  # up to date: nothing to do

    po_path = locale_dir / "sv" / "LC_MESSAGES" / "messages.po"
    later = po_path.with_suffix(".mo").stat().st_mtime + 10
    os.utime(po_path, (later, later))
    assert ensure_compiled(locale_dir) == [po_path.with_suffix(".mo")]


def test_compiled_catalogues_translate() -> None:
    assert translations("fi").gettext("Page not found") == "Sivua ei löytynyt"
    assert translations("sv").gettext("Page not found") == "Sidan hittades inte"
    assert translations("en").gettext("Page not found") == "Page not found"


def test_unsupported_language_is_refused() -> None:
    with pytest.raises(ValueError):
        translations("de")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", "fi"),
        ("sv", "sv"),
        ("sv-FI", "sv"),
        ("EN-gb", "en"),
        ("de-DE, en;q=0.8, sv;q=0.9", "sv"),
        ("en;q=0.5, fi;q=0.5", "en"),  # equal quality: the first listed
        ("sv;q=0, en;q=0.1", "en"),
        ("*", "fi"),
        ("sv;q=abc, en", "en"),
        ("de, fr", "fi"),
    ],
)
def test_accept_language(header: str, expected: str) -> None:
    assert language_from_accept_language(header) == expected


def test_dates_in_finnish_format() -> None:
    day = dt.date(2026, 11, 23)
    assert format_date(day, "fi") == "23.11.2026"
    assert format_date(day, "fi", "long") == "23. marraskuuta 2026"
    assert format_date(day, "sv") == "23 nov. 2026"
    assert format_date(day, "en") == "23 Nov 2026"

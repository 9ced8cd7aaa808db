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
    format_moment,
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
    assert format_date(day, "sv") == "23.11.2026"  # as Swedish is written in Finland
    assert format_date(day, "sv", "long") == "23 november 2026"
    assert format_date(day, "en") == "23 Nov 2026"


def test_moments_in_finnish_time_as_written_in_finland() -> None:
    moment = dt.datetime(2026, 12, 3, 18, 34, tzinfo=dt.UTC)  # 20.34 in Finland
    assert format_moment(moment, "fi") == "3.12.2026 20.34"
    assert format_moment(moment, "sv") == "3.12.2026 kl. 20.34"
    assert format_moment(moment, "en") == "3 Dec 2026 20:34"


def test_dates_and_datetimes_give_babels_answer() -> None:
    """Days are remembered; a datetime is its own day in its own time zone, never a remembered one."""
    from babel.dates import format_date as babel_format_date

    day = dt.date(2026, 11, 23)
    assert format_date(day, "fi") == format_date(day, "fi") == babel_format_date(day, locale="fi_FI")
    late = dt.datetime(2026, 11, 23, 23, 30, tzinfo=dt.timezone.utc)
    same_moment = late.astimezone(dt.timezone(dt.timedelta(hours=2)))  # == late, but already the 24th
    assert format_date(late, "fi") == "23.11.2026"
    assert format_date(same_moment, "fi") == "24.11.2026"


def test_template_gettext_is_jinjas_newstyle_gettext() -> None:
    """``_()`` in templates gives what Jinja's own newstyle gettext gives, escaping included,
    for every message of every catalogue and for formats the quick way leaves to Jinja."""
    from jinja2 import Environment
    from jinja2.ext import _make_new_gettext
    from markupsafe import Markup

    from web.i18n import LANGUAGES
    from web.templating import _newstyle_gettext

    context = Environment(autoescape=True).from_string("").new_context({})
    odd = ["100%%", "%(x)d", "%(x)s & <b>", "<i>%(x)s</i>", Markup("<b>%(x)s</b>"), "%(x)r", "%(x)-5s", "%(a(b)c)s", ""]
    variables = [
        {},
        {"x": "<script>&'\"", "y": "</p>"},
        {"x": Markup("<b>ok</b>"), "y": 3},
        {"x": 5, "name": "<n>", "field": "f&", "what": "w<", "min": 1, "max": 2, "count": 3, "date": "<d>"},
    ]

    def outcome(gettext: object, message: str, values: dict[str, object]) -> tuple[object, ...]:
        try:
            answer = context.call(gettext, message, **values)
        except Exception as error:  # noqa: BLE001 - the same refusal is part of the same behaviour
            return ("refused", type(error))
        return (type(answer), str(answer))

    for language in LANGUAGES:
        catalogue = translations(language)
        ours, jinjas = _newstyle_gettext(catalogue.gettext), _make_new_gettext(catalogue.gettext)
        messages = [m for m in catalogue._catalog if isinstance(m, str)] + odd  # type: ignore[attr-defined]
        for message in messages:
            for values in variables:
                for _twice in range(2):  # the second time from the cache
                    assert outcome(ours, message, values) == outcome(jinjas, message, values), (language, message)


def test_templates_escape_translated_variables() -> None:
    from web.templating import LocalisedJinjaEngine

    engine = LocalisedJinjaEngine()
    text = engine.render_string('{{ _("Saved: %(what)s.", what=x) }}|{{ _("Page not found") }}',
                                {"lang": "fi", "x": "<script>"})
    assert text == f"{translations('fi').gettext('Saved: %(what)s.') % {'what': '&lt;script&gt;'}}|Sivua ei löytynyt"

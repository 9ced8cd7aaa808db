"""The catalogues are complete: no untranslated interface string slips in."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from web.i18n import LANGUAGES, LOCALE_DIR

WEB_DIR = LOCALE_DIR.parent


def catalog(language: str) -> Catalog:
    with (LOCALE_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as po_file:
        return read_po(po_file, locale=language)


def msgids_in_the_code() -> dict[str, str]:
    """Every msgid marked in web/ (templates and Python), as babel.cfg says, with where."""
    with (WEB_DIR / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    found = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(WEB_DIR), method_map, options_map
    ):
        for msgid in message if isinstance(message, tuple) else (message,):
            if msgid:
                found.setdefault(msgid, f"{filename}:{lineno}")
    return found


def test_the_code_has_strings_to_translate() -> None:
    found = msgids_in_the_code()
    assert "Skip to main content" in found
    assert "Page not found" in found  # from web/errors.py, marked with N_()


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_string_in_the_code_is_in_the_catalogue(language: str) -> None:
    messages = catalog(language)
    missing = {msgid: where for msgid, where in msgids_in_the_code().items() if msgid not in messages}
    assert not missing, f"not in {language}/messages.po (see web/locale/README.md): {missing}"


@pytest.mark.parametrize("language", ["fi", "sv"])
def test_every_finnish_and_swedish_entry_is_translated(language: str) -> None:
    untranslated = [
        message.id
        for message in catalog(language)
        if message.id and (not message.string or message.fuzzy or message.string == message.id)
    ]
    assert not untranslated, f"untranslated or fuzzy in {language}: {untranslated}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_keep_their_placeholders(language: str) -> None:
    problems = [(message.id, [str(error) for error in errors]) for message, errors in catalog(language).check()]
    assert not problems


@pytest.mark.parametrize("language", LANGUAGES)
def test_catalogue_has_no_obsolete_entries(language: str) -> None:
    assert not catalog(language).obsolete, "run pybabel update, then remove the obsolete entries"


def test_english_catalogue_is_complete() -> None:
    assert all(message.string for message in catalog("en") if message.id)


def test_template_lists_every_msgid() -> None:
    with (LOCALE_DIR / "messages.pot").open("rb") as pot_file:
        template = read_po(pot_file)
    assert set(msgids_in_the_code()) == {message.id for message in template if message.id}, (
        "messages.pot is out of date: run pybabel extract (web/locale/README.md)"
    )


def test_po_files_are_the_only_catalogue_sources(tmp_path: Path) -> None:
    assert sorted(path.parent.parent.name for path in LOCALE_DIR.glob("*/LC_MESSAGES/messages.po")) == sorted(
        LANGUAGES
    )

"""The domain's words as a reader sees them: refusals, field names and form errors in fi/sv/en."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from domain import items
from domain.errors import DomainError
from domain.inputs import LONG_TEXT
from domain.values import NeedCategory, StepStatus, parse
from web import forms as f
from web.domain_messages import FIELD_LABELS, VOCABULARIES, translate_message
from web.i18n import translations


def say(error: DomainError | tuple[str, dict[str, Any]], language: str) -> str:
    template, params = (error.template, error.params) if isinstance(error, DomainError) else error
    return translate_message(template, params, translations(language).gettext, language)


def refusal(vocabulary: Any, value: object, field: str) -> DomainError:
    with pytest.raises(DomainError) as caught:
        parse(vocabulary, value, field)
    return caught.value


class Posted(dict[str, Any]):
    """A posted form as Litestar hands it over (``getall`` for lists)."""

    def getall(self, name: str, default: list[str]) -> list[str]:
        value = self.get(name, default)
        return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------------ field names


def _changeable_fields() -> set[str]:
    """Every field of every item of a plan, as 'Latest changes' and a conflict name them."""
    kinds = (items.Client, items.Responsibility, items.Consent, items.Need, items.Goal, items.Member, items.Step)
    bookkeeping = {"id", "revision", "changes", "earlier_schedules"}
    return {field.name for kind in kinds for field in msgspec.structs.fields(kind)} - bookkeeping


def test_every_field_a_change_can_name_has_a_label() -> None:
    assert _changeable_fields() - set(FIELD_LABELS) == set()
    assert "organisation" in FIELD_LABELS  # a member's 'added' change names it so


@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("client_stance", {"fi": "Asiakkaan näkemys", "sv": "Klientens syn", "en": "The client's view"}),
        ("client_comment", {"fi": "Asiakkaan kommentti", "sv": "Klientens kommentar", "en": "The client's comment"}),
        ("non_disclosure", {"fi": "Turvakielto", "sv": "Spärrmarkering", "en": "Non-disclosure order"}),
    ],
)
def test_the_clients_view_and_the_non_disclosure_order_have_labels(field: str, words: dict[str, str]) -> None:
    for language, word in words.items():
        assert translations(language).gettext(FIELD_LABELS[field]) == word


# ------------------------------------------------------------------------ choices


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("fi", "Palvelutarvekategoria: valitse jokin näistä: Terveydentila, Työ ja työllistyminen, Arjen hallinta "
               "tai Osaaminen ja ammattitaito."),
        ("sv", "Behovskategori: välj ett av följande: Hälsotillstånd, Arbete och sysselsättning, Vardagen "
               "eller Kunnande och yrkesskicklighet."),
        ("en", "Need category: choose one of Health, Work and employment, Everyday life or Skills and competence."),
    ],
)
def test_a_wrong_choice_names_the_allowed_ones_in_words(language: str, expected: str) -> None:
    said = say(refusal(NeedCategory, "astrology", "category"), language)
    assert said == expected
    assert "astrology" not in said


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("fi", "Tila: valitse jokin näistä: suunniteltu, alkanut, tehty tai peruttu."),
        ("en", "Status: choose one of planned, started, done or cancelled."),
    ],
)
def test_a_wrong_status_names_the_statuses_in_words(language: str, expected: str) -> None:
    assert say(refusal(StepStatus, "paused", "status"), language) == expected


@pytest.mark.parametrize(("language", "expected"), [("fi", "Tila: valitse jokin."), ("sv", "Läge: välj ett alternativ."),
                                                    ("en", "Status: choose one.")])
@pytest.mark.parametrize("value", ["", None])
def test_nothing_chosen_is_asked_for(language: str, expected: str, value: str | None) -> None:
    assert say(refusal(StepStatus, value, "status"), language) == expected


# ------------------------------------------------------------------------ other words


def test_an_empty_field_agrees_in_swedish_whatever_its_label() -> None:
    template = "%(field)s must not be empty."
    assert say((template, {"field": "value"}), "sv") == "Värde: fältet får inte vara tomt."
    assert say((template, {"field": "description"}), "sv").endswith(": fältet får inte vara tomt.")
    assert say((template, {"field": "description"}), "fi") == "Kuvaus ei voi olla tyhjä."


@pytest.mark.parametrize(
    ("language", "expected"),
    [("fi", "Vain ammattilaiset, ei asiakas"), ("sv", "Endast yrkespersoner, inte klienten"),
     ("en", "Professionals only, not the client")],
)
def test_internal_notes_say_only_who_does_not_read_them(language: str, expected: str) -> None:
    """Every professional with a relation to the plan reads them (colleagues under the client's
    consent too, not only the network): the label promises no more than that."""
    assert translations(language).gettext(VOCABULARIES["visibility"]["professionals"]) == expected


@pytest.mark.parametrize(
    ("template", "params", "expected"),
    [
        ("Only the named expert or the counterpart can close the plan.", {},
         "Vain nimetty asiantuntija tai vastinpari voi sulkea suunnitelman."),
        ("Steps are still planned or started (%(steps)s): mark each one done or cancelled before the plan is closed.",
         {"steps": "Työkokeilu"},
         "Vaiheita on vielä suunniteltuina tai käynnissä (Työkokeilu): merkitse kukin tehdyksi tai perutuksi ennen "
         "kuin suunnitelma suljetaan."),
        ("The planned end cannot be before the plan was opened (%(opened)s).", {"opened": "2026-06-26"},
         "Suunniteltu päättyminen ei voi olla ennen suunnitelman avaamista (26.6.2026)."),
    ],
)
def test_the_new_refusals_are_said_in_finnish(template: str, params: dict[str, str], expected: str) -> None:
    assert say((template, params), "fi") == expected


# ------------------------------------------------------------------------ forms


def test_an_empty_need_form_says_everything_that_is_missing_at_once() -> None:
    with pytest.raises(f.FormInvalid) as caught:
        f.decode_form(Posted(category="", description="  ", financial=""), f.NeedForm)
    errors = caught.value.errors
    assert list(errors) == ["category", "description"]
    assert [say(error, "fi") for error in errors.values()] == [
        "Palvelutarvekategoria: valitse jokin.", "Kuvaus ei voi olla tyhjä."]


def test_a_form_with_a_missing_number_reports_it_with_the_other_errors() -> None:
    with pytest.raises(f.FormInvalid) as caught:
        f.decode_form(Posted(kind="", measured_on=""), f.MeasureForm)
    assert list(caught.value.errors) == ["kind", "value", "measured_on"]


def test_a_step_form_without_its_choices_asks_for_them() -> None:
    with pytest.raises(f.FormInvalid) as caught:
        f.decode_form(Posted(title="Työkokeilu", need_id="", responsible_member_id="", planned_start="2026-12-01",
                             planned_end="2027-01-31"), f.StepForm)
    assert {name: say(error, "en") for name, error in caught.value.errors.items()} == {
        "need_id": "Need: choose one.", "responsible_member_id": "Responsible: choose one."}


@pytest.mark.parametrize(("language", "expected"), [("fi", "Kirjoita kommenttisi ennen kuin lähetät sen."),
                                                    ("sv", "Skriv din kommentar innan du skickar den."),
                                                    ("en", "Write your comment before you send it.")])
def test_the_clients_empty_comment_asks_for_their_comment(language: str, expected: str) -> None:
    with pytest.raises(f.FormInvalid) as caught:
        f.decode_form(Posted(text="   "), f.ClientCommentForm)
    assert {name: say(error, language) for name, error in caught.value.errors.items()} == {"text": expected}


@pytest.mark.parametrize(("text", "language", "expected"), [
    ("x" * (LONG_TEXT + 1), "en", f"Your comment is too long: at most {LONG_TEXT} characters."),
    ("x" * (LONG_TEXT + 1), "fi", f"Kommenttisi on liian pitkä: enintään {LONG_TEXT} merkkiä."),
    ("a\x00b", "en", "Your comment contains a character that cannot be saved: remove it and send the comment again."),
    ("a\x00b", "sv", "Din kommentar innehåller ett tecken som inte kan sparas: ta bort det och skicka kommentaren igen."),
])
def test_the_clients_comment_too_long_or_with_a_forbidden_character_is_told_so(
    text: str, language: str, expected: str
) -> None:
    """Not "write your comment": the client wrote one, and must know what to change."""
    with pytest.raises(f.FormInvalid) as caught:
        f.decode_form(Posted(text=text), f.ClientCommentForm)
    assert say(caught.value.errors["text"], language) == expected


@pytest.mark.parametrize("active", ["maybe", "2"])
def test_a_yes_or_no_field_with_another_value_asks_for_yes_or_no(active: str) -> None:
    with pytest.raises(f.FormInvalid) as caught:
        f.decode_form(Posted(active=active, seen_revision="1"), f.NonDisclosureForm)
    assert say(caught.value.errors["active"], "en").endswith("must be yes or no.")


@pytest.mark.parametrize(("typed", "value"), [(" 5 ", 5.0), ("7,5", 7.5), ("-0,25", -0.25), ("7.5", 7.5)])
def test_a_number_is_read_as_people_type_it(typed: str, value: float) -> None:
    measure = f.decode_form(Posted(kind="work_ability_score", value=typed, measured_on="2026-12-01"), f.MeasureForm)
    assert measure.value == value


@pytest.mark.parametrize("typed", ["7,5,1", "1,000.5", "seven"])
def test_a_number_that_is_not_one_is_still_refused(typed: str) -> None:
    with pytest.raises(f.FormInvalid) as caught:
        f.decode_form(Posted(kind="work_ability_score", value=typed, measured_on="2026-12-01"), f.MeasureForm)
    assert say(caught.value.errors["value"], "en").endswith("must be a number.")


def test_a_form_that_passes_its_checks_is_decoded() -> None:
    need = f.decode_form(Posted(category="health", description="Selkäkipu", financial=""), f.NeedForm)
    assert (need.category, need.description) == ("health", "Selkäkipu")
    assert need.command_id  # made up when missing


def test_the_checks_of_a_form_are_its_own_fields() -> None:
    for form in (value for value in vars(f).values() if isinstance(value, type) and issubclass(value, f.Form)):
        assert set(form.checks) <= set(form.__struct_fields__), form.__name__

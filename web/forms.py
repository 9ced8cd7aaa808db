"""The plan page's forms, one msgspec Struct per form, and how a posted form is decoded.

Each Struct names the fields of one domain command (the same names, so a refusal's
``DomainError.field`` points at the form field to mark) plus ``command_id`` (a fresh
uuid4 rendered into the form, so that a double submit is applied once) and, for edits of
an existing item, ``seen_revision`` (the item's revision when the form was rendered).

Text and dates stay text here: the domain checks them and says what is wrong in words
the catalogues translate. Numbers are numbers, and a missing required field is missing:
:func:`decode_form` turns msgspec's complaint about either into a :class:`FormInvalid`
with a domain-style message template for the field.

A form also names the domain's own check of each field it can check alone (``checks``:
a need's category is chosen, its description written...), and :func:`decode_form` runs
them all, so that a form comes back with every such error at once; the domain checks
everything again when the command runs, and is the one that decides (the rules that
compare fields or look at the plan are its alone).
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple, TypeVar
from urllib.parse import unquote_to_bytes

import msgspec
from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import ValidationException

from domain.errors import InvalidValue
from domain.inputs import LONG_TEXT, as_date, as_identifier, chosen, required_text
from domain.values import (
    ClientStance,
    ClosingOutcome,
    GoalStatus,
    Language,
    MeasureKind,
    NeedCategory,
    NeedStatus,
    NoteVisibility,
    ReferringParty,
    Segment,
    StepStatus,
    parse,
)
from web.i18n import N_

__all__ = (
    "ClientContactForm",
    "ClientDetailsForm",
    "CloseForm",
    "ConsentForm",
    "CounterpartForm",
    "FormInvalid",
    "GoalForm",
    "GoalRevisionForm",
    "GoalSettlementForm",
    "HandoverDecisionForm",
    "HandoverProposalForm",
    "MeasureForm",
    "MemberForm",
    "MemberRemovalForm",
    "MemberUpdateForm",
    "NeedForm",
    "NeedUpdateForm",
    "NonDisclosureForm",
    "NoteForm",
    "ReopenForm",
    "StepForm",
    "StepOutcomeForm",
    "StepProgressForm",
    "StepRescheduleForm",
    "StepUpdateForm",
    "WithdrawConsentForm",
    "FieldShape",
    "decode_form",
    "form_fields",
)

S = TypeVar("S", bound=msgspec.Struct)

Check = Callable[[Any, str], object]
"""A domain check of one posted value, named by its field: it raises ``InvalidValue``."""


def _one_of(vocabulary: Any) -> Check:
    return functools.partial(parse, vocabulary)


def _written(value: Any, field: str) -> object:
    """Some text (the domain's own limits, which are at most ``LONG_TEXT``, apply when it runs)."""
    return required_text(value, field, LONG_TEXT)


COMMENT_MISSING = N_("Write your comment before you send it.")
_COMMENT_REFUSALS = {
    "%(field)s is too long: at most %(limit)s characters.": N_(
        "Your comment is too long: at most %(limit)s characters."),
    "%(field)s contains a forbidden character.": N_(
        "Your comment contains a character that cannot be saved: remove it and send the comment again."),
}
"""The domain's refusals of a note's text, as the client is told them of their comment."""


def _comment_written(value: Any, field: str) -> object:
    """The client's comment is a note to the domain, told in the client's words: a comment
    missing is asked for, one too long or with a character no text may hold is told so."""
    try:
        return _written(value, field)
    except InvalidValue as refusal:
        params = {name: value for name, value in refusal.params.items() if name != "field"}
        raise InvalidValue(field, _COMMENT_REFUSALS.get(refusal.template, COMMENT_MISSING), **params) from None


class Form(msgspec.Struct, kw_only=True):
    """Every form: the command id makes a repeated submit harmless."""

    command_id: str = ""
    checks: ClassVar[Mapping[str, Check]] = {}
    """The domain's check of each field that can be checked alone, by the field's name."""

    def fields(self) -> dict[str, Any]:
        """The command's own fields (without ``command_id``)."""
        return {name: getattr(self, name) for name in self.__struct_fields__ if name != "command_id"}


class EditForm(Form, kw_only=True):
    """A form that edits an existing item names the item's revision the editor saw."""

    seen_revision: int


# --------------------------------------------------------------------------- client


class ClientDetailsForm(EditForm, kw_only=True):
    client_name: str = ""
    segment: str = ""
    language: str = ""
    referring_party: str = ""
    checks = {
        "client_name": _written,
        "segment": _one_of(Segment),
        "language": _one_of(Language),
        "referring_party": _one_of(ReferringParty),
    }


class ClientContactForm(EditForm, kw_only=True):
    contact: str = ""


class NonDisclosureForm(EditForm, kw_only=True):
    """Set (``true``) or lift (``false``) the non-disclosure order: the form says which."""

    active: bool


class CloseForm(Form, kw_only=True):
    outcome: str = ""
    note: str = ""
    checks = {"outcome": _one_of(ClosingOutcome)}


class ReopenForm(Form, kw_only=True):
    reason: str = ""
    checks = {"reason": _written}


# ---------------------------------------------------------------------------- needs


class NeedForm(Form, kw_only=True):
    category: str = ""
    description: str = ""
    financial: str = ""
    checks = {"category": _one_of(NeedCategory), "description": _written}


class NeedUpdateForm(EditForm, kw_only=True):
    category: str = ""
    description: str = ""
    financial: str = ""
    status: str = ""
    checks = {"category": _one_of(NeedCategory), "description": _written, "status": _one_of(NeedStatus)}


# ---------------------------------------------------------------------------- goals


class GoalForm(Form, kw_only=True):
    title: str = ""
    need_ids: list[str] = []
    target_date: str = ""
    checks = {"title": _written, "target_date": as_date}


class GoalRevisionForm(EditForm, kw_only=True):
    title: str = ""
    need_ids: list[str] = []
    target_date: str = ""
    checks = {"title": _written, "target_date": as_date}


class GoalSettlementForm(EditForm, kw_only=True):
    status: str = ""
    note: str = ""
    checks = {"status": _one_of(GoalStatus)}


# -------------------------------------------------------------------------- network


class ConsentForm(Form, kw_only=True):
    """A consent a professional records for the client (the organisation's name comes from its register)."""

    organisation_id: str = ""
    valid_from: str = ""
    checks = {"organisation_id": as_identifier, "valid_from": as_date}


class WithdrawConsentForm(EditForm, kw_only=True):
    pass


class MemberForm(Form, kw_only=True):
    """A member is named by their user id in an organisation; the name comes from their account."""

    person_id: str = ""
    profession: str = ""
    organisation_id: str = ""
    contact: str = ""
    part: str = ""
    checks = {"person_id": as_identifier, "profession": _written, "organisation_id": chosen}


class MemberUpdateForm(EditForm, kw_only=True):
    profession: str = ""
    contact: str = ""
    part: str = ""
    checks = {"profession": _written}


class MemberRemovalForm(EditForm, kw_only=True):
    pass


class CounterpartForm(EditForm, kw_only=True):
    member_id: str = ""


class HandoverProposalForm(Form, kw_only=True):
    note: str = ""


class HandoverDecisionForm(Form, kw_only=True):
    note: str = ""


# ---------------------------------------------------------------------------- steps


class StepForm(Form, kw_only=True):
    title: str = ""
    need_id: str = ""
    responsible_member_id: str = ""
    planned_start: str = ""
    planned_end: str = ""
    service: str = ""
    checks = {
        "title": _written,
        "need_id": chosen,
        "responsible_member_id": chosen,
        "planned_start": as_date,
        "planned_end": as_date,
    }


class StepUpdateForm(EditForm, kw_only=True):
    title: str = ""
    need_id: str = ""
    responsible_member_id: str = ""
    service: str = ""
    checks = {"title": _written, "need_id": chosen, "responsible_member_id": chosen}


class StepRescheduleForm(EditForm, kw_only=True):
    planned_start: str = ""
    planned_end: str = ""
    reason: str = ""
    checks = {"planned_start": as_date, "planned_end": as_date}


class StepProgressForm(EditForm, kw_only=True):
    status: str = ""
    on: str = ""
    outcome: str = ""
    checks = {"status": _one_of(StepStatus), "on": as_date}


class StepOutcomeForm(EditForm, kw_only=True):
    outcome: str = ""
    checks = {"outcome": _written}


# -------------------------------------------------------------------- measures, notes


class MeasureForm(Form, kw_only=True):
    kind: str = ""
    value: float
    measured_on: str = ""
    scale_name: str = ""
    scale_min: float | None = None
    scale_max: float | None = None
    checks = {"kind": _one_of(MeasureKind), "measured_on": as_date}


class NoteForm(Form, kw_only=True):
    text: str = ""
    visibility: str = "professionals"
    checks = {"text": _written, "visibility": _one_of(NoteVisibility)}


# ------------------------------------------------------------------------- decoding


class FormInvalid(Exception):
    """The posted form does not fit its Struct: ``errors`` maps a field to (template, params)."""

    def __init__(self, errors: dict[str, tuple[str, dict[str, Any]]]):
        self.errors = errors
        super().__init__(", ".join(errors))


class FieldShape(NamedTuple):
    """One field of a form Struct, as posting and decoding it needs to know it."""

    name: str
    is_list: bool
    is_text: bool


async def refuse_malformed_form(request: Request[Any, Any, Any]) -> None:
    """Refuse (400, in the user's language) a URL-encoded form that is not UTF-8.

    Litestar decodes such a body leniently: ``%FF`` and a lone surrogate (``%ED%A0%80``)
    become U+FFFD and a raw byte 0xFF becomes "ÿ", so a text would be saved altered. Run
    before every handler (``before_request``); the body read here is the one the handler
    reads. Percent-decoding the whole body at once checks every field: the separators are
    ASCII, which never splits a UTF-8 sequence.
    """
    if request.method in ("GET", "HEAD") or request.content_type[0] != RequestEncodingType.URL_ENCODED:
        return
    body = await request.body()
    try:
        unquote_to_bytes(body.decode("ascii")).decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationException("the form is not UTF-8") from None


def whole_number(text: str, max_digits: int = 12) -> int | None:
    """The number ``text`` writes in at most ``max_digits`` ASCII digits, else None (``str.isdigit``
    also takes "²", which ``int`` refuses, and ``int`` refuses more than 4,300 digits)."""
    if text.isascii() and text.isdigit() and len(text) <= max_digits:
        return int(text)
    return None


@functools.cache
def form_fields(struct_type: type[msgspec.Struct]) -> tuple[FieldShape, ...]:
    """The fields of a form Struct (worked out once per Struct: ``msgspec.inspect`` is slow)."""
    return tuple(
        FieldShape(field.name, _is_list(field.type), _is_text(field.type))
        for field in _type_info(struct_type).fields  # type: ignore[attr-defined]
    )


@functools.cache
def _type_info(struct_type: type[msgspec.Struct]) -> Any:
    return msgspec.inspect.type_info(struct_type)


def decode_form(form: Any, struct_type: type[S]) -> S:
    """Decode a posted form (a multi-dict: ``getall`` for lists) into ``struct_type``.

    An empty value of a field that is not text counts as not given. A missing
    ``command_id`` is made up here, so the command is still applied (once).
    """
    raw: dict[str, Any] = {}
    for field in form_fields(struct_type):
        if field.is_list:
            values = [v for v in form.getall(field.name, []) if v != ""] if hasattr(form, "getall") else form.get(field.name, [])
            raw[field.name] = values
            continue
        value = form.get(field.name)
        if isinstance(value, str) and not field.is_text:
            value = _as_typed(value)
        if value is None or (value == "" and not field.is_text):
            continue
        raw[field.name] = value
    if not raw.get("command_id"):
        raw["command_id"] = str(uuid.uuid4())
    errors = _check(struct_type, raw)
    try:
        data = msgspec.convert(raw, struct_type, strict=False)
    except msgspec.ValidationError as error:
        errors = {**_explain(error, struct_type), **errors}
    if errors:
        order = {field.name: place for place, field in enumerate(form_fields(struct_type))}
        raise FormInvalid(dict(sorted(errors.items(), key=lambda error: order.get(error[0], len(order)))))
    return data


_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")


def _as_typed(value: str) -> str:
    """A number or a yes/no as people type it: spaces around it dropped, and a decimal comma
    (7,5 as written in Finland and Sweden) read as a decimal point."""
    value = value.strip()
    return value.replace(",", ".") if _DECIMAL_COMMA.fullmatch(value) else value


def _check(struct_type: type[msgspec.Struct], raw: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every error of the form's ``checks``, by field."""
    errors = {}
    for name, check in getattr(struct_type, "checks", {}).items():
        try:
            check(raw.get(name), name)
        except InvalidValue as error:
            errors[name] = (error.template, error.params)
    return errors


_AT = re.compile(r"at `\$\.(\w+)")
_MISSING = re.compile(r"missing required field `(\w+)`")


def _explain(error: msgspec.ValidationError, struct_type: type[msgspec.Struct]) -> dict[str, tuple[str, dict[str, Any]]]:
    text = str(error)
    missing = _MISSING.search(text)
    if missing:
        field = missing.group(1)
        return {field: ("%(field)s must not be empty.", {"field": field})}
    at = _AT.search(text)
    field = at.group(1) if at else ""
    expected = _expected_type(struct_type, field)
    if expected == "int":
        return {field: ("%(field)s must be a whole number of 0 or more.", {"field": field})}
    if expected == "float":
        return {field: ("%(field)s must be a number.", {"field": field})}
    if expected == "bool":
        return {field: ("%(field)s must be yes or no.", {"field": field})}
    return {field: ("%(field)s must be text.", {"field": field})}


def _expected_type(struct_type: type[msgspec.Struct], field_name: str) -> str:
    for field in _type_info(struct_type).fields:
        if field.name == field_name:
            kinds = _leaf_types(field.type)
            if msgspec.inspect.IntType in kinds:
                return "int"
            if msgspec.inspect.FloatType in kinds:
                return "float"
            if msgspec.inspect.BoolType in kinds:
                return "bool"
    return "str"


def _leaf_types(t: Any) -> set[type]:
    if isinstance(t, msgspec.inspect.UnionType):
        return {type(member) for member in t.types}
    return {type(t)}


def _is_list(t: Any) -> bool:
    return isinstance(t, msgspec.inspect.ListType)


def _is_text(t: Any) -> bool:
    return msgspec.inspect.StrType in _leaf_types(t)


# --------------------------------------------------------- the client's own view (/my-plan)


class ClientCommentForm(Form, kw_only=True):
    """A comment of the client: a note that the client and the professionals read."""

    text: str = ""
    checks = {"text": _comment_written}


class ClientGoalViewForm(EditForm, kw_only=True):
    """The client agrees with a goal or would change it (then in their own words)."""

    stance: str = ""
    comment: str = ""
    checks = {"stance": _one_of(ClientStance)}


class ClientConsentForm(Form, kw_only=True):
    """The client gives a consent for an organisation (its name comes from the region's list)."""

    organisation_id: str = ""


class ClientWithdrawConsentForm(EditForm, kw_only=True):
    pass

"""The plan page's forms, one msgspec Struct per form, and how a posted form is decoded.

Each Struct names the fields of one domain command (the same names, so a refusal's
``DomainError.field`` points at the form field to mark) plus ``command_id`` (a fresh
uuid4 rendered into the form, so that a double submit is applied once) and, for edits of
an existing item, ``seen_revision`` (the item's revision when the form was rendered).

Text and dates stay text here: the domain checks them and says what is wrong in words
the catalogues translate. Numbers are numbers, and a missing required field is missing:
:func:`decode_form` turns msgspec's complaint about either into a :class:`FormInvalid`
with a domain-style message template for the field.
"""

from __future__ import annotations

import functools
import re
import uuid
from typing import Any, NamedTuple, TypeVar

import msgspec

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


class Form(msgspec.Struct, kw_only=True):
    """Every form: the command id makes a repeated submit harmless."""

    command_id: str = ""

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


class ClientContactForm(EditForm, kw_only=True):
    contact: str = ""


class NonDisclosureForm(EditForm, kw_only=True):
    """Set (``true``) or lift (``false``) the non-disclosure order: the form says which."""

    active: bool


class CloseForm(Form, kw_only=True):
    outcome: str = ""
    note: str = ""


class ReopenForm(Form, kw_only=True):
    reason: str = ""


# ---------------------------------------------------------------------------- needs


class NeedForm(Form, kw_only=True):
    category: str = ""
    description: str = ""
    financial: str = ""


class NeedUpdateForm(EditForm, kw_only=True):
    category: str = ""
    description: str = ""
    financial: str = ""
    status: str = ""


# ---------------------------------------------------------------------------- goals


class GoalForm(Form, kw_only=True):
    title: str = ""
    need_ids: list[str] = []
    target_date: str = ""


class GoalRevisionForm(EditForm, kw_only=True):
    title: str = ""
    need_ids: list[str] = []
    target_date: str = ""


class GoalSettlementForm(EditForm, kw_only=True):
    status: str = ""
    note: str = ""


# -------------------------------------------------------------------------- network


class ConsentForm(Form, kw_only=True):
    organisation_id: str = ""
    organisation_name: str = ""
    valid_from: str = ""


class WithdrawConsentForm(EditForm, kw_only=True):
    pass


class MemberForm(Form, kw_only=True):
    person_id: str = ""
    name: str = ""
    profession: str = ""
    organisation_id: str = ""
    contact: str = ""
    part: str = ""


class MemberUpdateForm(EditForm, kw_only=True):
    profession: str = ""
    contact: str = ""
    part: str = ""


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


class StepUpdateForm(EditForm, kw_only=True):
    title: str = ""
    need_id: str = ""
    responsible_member_id: str = ""
    service: str = ""


class StepRescheduleForm(EditForm, kw_only=True):
    planned_start: str = ""
    planned_end: str = ""
    reason: str = ""


class StepProgressForm(EditForm, kw_only=True):
    status: str = ""
    on: str = ""
    outcome: str = ""


class StepOutcomeForm(EditForm, kw_only=True):
    outcome: str = ""


# -------------------------------------------------------------------- measures, notes


class MeasureForm(Form, kw_only=True):
    kind: str = ""
    value: float
    measured_on: str = ""
    scale_name: str = ""
    scale_min: float | None = None
    scale_max: float | None = None


class NoteForm(Form, kw_only=True):
    text: str = ""
    visibility: str = "professionals"


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
        if value is None or (value == "" and not field.is_text):
            continue
        raw[field.name] = value
    if not raw.get("command_id"):
        raw["command_id"] = str(uuid.uuid4())
    try:
        return msgspec.convert(raw, struct_type, strict=False)
    except msgspec.ValidationError as error:
        raise FormInvalid(_explain(error, struct_type)) from None


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
    return {field: ("%(field)s must be text.", {"field": field})}


def _expected_type(struct_type: type[msgspec.Struct], field_name: str) -> str:
    for field in _type_info(struct_type).fields:
        if field.name == field_name:
            kinds = _leaf_types(field.type)
            if msgspec.inspect.IntType in kinds:
                return "int"
            if msgspec.inspect.FloatType in kinds:
                return "float"
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


class ClientGoalViewForm(EditForm, kw_only=True):
    """The client agrees with a goal or would change it (then in their own words)."""

    stance: str = ""
    comment: str = ""


class ClientConsentForm(Form, kw_only=True):
    """The client gives a consent for an organisation (its name comes from the region's list)."""

    organisation_id: str = ""


class ClientWithdrawConsentForm(EditForm, kw_only=True):
    pass

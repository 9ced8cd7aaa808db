"""The plan transcoder writes with msgspec exactly the bytes the library's JSON transcoder
writes, so stored events do not change and the library's decoder reads them:

- for every stored event sample (every event class at its current version, decoded into
  its values), and
- for any state hypothesis makes of the values events hold: texts with control and
  non-ASCII characters, floats of every form (`1e+16`, `-0.0`, NaN), big integers, dates,
  datetimes with and without a zone, UUIDs, decimals, every registered Struct (a
  `Measure` with its floats, a `Step` with its nested schedules), StrEnum members, lists,
  tuples and dicts of these;
- a state the fast path does not know (a dict with an integer key) is written by the
  library's encoder, and an unregistered type is refused as the library refuses it.
"""

from __future__ import annotations

import dataclasses
import string
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Transcoding,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.items import Change, Schedule, Step
from domain.transcodings import (
    STRUCT_TYPES,
    PlanTranscoder,
    StructTranscoding,
    plan_transcoder,
    register_plan_transcodings,
)
from domain.values import Actor, NoteVisibility
from tests.domain.make_event_samples import EVENT_SAMPLES

EVENT_FILES = sorted(EVENT_SAMPLES.glob("*.json"))


def library_transcoder() -> JSONTranscoder:
    """The library's own transcoder with the plan's transcodings: what wrote the stores."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    register_plan_transcodings(transcoder)
    return transcoder


LIBRARY = library_transcoder()
PLAN = plan_transcoder()


def test_the_application_writes_with_the_plan_transcoder() -> None:
    assert isinstance(PLAN, PlanTranscoder)


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.name)
def test_every_event_sample_is_written_byte_for_byte_as_the_library_writes_it(path: Path) -> None:
    state = LIBRARY.decoder.decode(path.read_text(encoding="utf-8"))["state"]

    assert PLAN.encode(state) == LIBRARY.encode(state)
    assert LIBRARY.decode(PLAN.encode(state)) == state


def test_a_struct_is_written_natively_only_if_it_cannot_hold_a_float() -> None:
    holding = {t.__name__ for t in STRUCT_TYPES if StructTranscoding(t).holds_floats}

    assert holding == {"Measure"}


texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", "Äiti ja ÅSA", "\x00\x1f\x7f\u2028\"\\\n\t\b\f\r", string.printable]
)
floats = st.floats() | st.sampled_from([1e16, 1e-7, 2.5e-5, -0.0, 1e300, float("inf"), float("-inf")])
integers = st.integers() | st.sampled_from([2**64, -(2**70)])
aware_datetimes = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]))
datetimes = aware_datetimes | st.datetimes()
actors = st.builds(
    msgspec.structs.replace,
    st.just(Actor(person_id="p", name="n", organisation_id="o", organisation_name="on")),
    name=texts,
)


def struct_of(struct_type: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    return st.builds(
        struct_type,
        **{f.name: values_of(f.type) for f in msgspec.structs.fields(struct_type) if f.required},
    )


def values_of(annotation: Any) -> st.SearchStrategy[Any]:
    simple = {str: texts, int: integers, float: floats, bool: st.booleans()}
    simple |= {date: st.dates(), datetime: aware_datetimes}
    if annotation in simple:
        return simple[annotation]
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return struct_of(annotation)
    origin, args = getattr(annotation, "__origin__", None), getattr(annotation, "__args__", ())
    if origin is list:
        return st.lists(values_of(args[0]), max_size=3)
    return st.one_of(*(values_of(arg) if arg is not type(None) else st.none() for arg in args))


structs = st.one_of(*(struct_of(t) for t in STRUCT_TYPES))
structs_with_lists = st.builds(
    msgspec.structs.replace,
    struct_of(Step),
    changes=st.lists(struct_of(Change), max_size=2),
    earlier_schedules=st.lists(struct_of(Schedule), max_size=2),
)
leaves = (
    texts
    | integers
    | floats
    | st.booleans()
    | st.none()
    | st.dates()
    | datetimes
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.sampled_from(NoteVisibility)
    | actors
    | structs
    | structs_with_lists
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(texts, values, max_size=8))
def test_any_state_is_written_byte_for_byte_as_the_library_writes_it(state: dict[str, Any]) -> None:
    assert PLAN.encode(state) == LIBRARY.encode(state)


def test_what_the_fast_path_does_not_know_is_left_to_the_library() -> None:
    state = {"counts": {1: "one", 2.5: uuid.UUID(int=7)}, "at": date(2026, 1, 2)}

    assert PLAN.encode(state) == LIBRARY.encode(state) == (
        b'{"counts":{"1":"one","2.5":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000007"}},'
        b'"at":{"_type_":"date_iso","_data_":"2026-01-02"}}'
    )


def test_a_registered_str_subclass_is_written_as_a_str_as_the_library_writes_it() -> None:
    class VisibilityByName(Transcoding):
        type = NoteVisibility
        name = "visibility"

        def encode(self, obj: NoteVisibility) -> str:
            return obj.name

        def decode(self, data: str) -> NoteVisibility:
            return NoteVisibility[data]

    library, plan = library_transcoder(), plan_transcoder()
    library.register(VisibilityByName())
    plan.register(VisibilityByName())
    state = {"visibility": NoteVisibility.PROFESSIONALS}

    assert plan.encode(state) == library.encode(state) == b'{"visibility":"professionals"}'


def test_an_unregistered_type_is_refused_as_the_library_refuses_it() -> None:
    @dataclasses.dataclass
    class Unknown:
        value: int

    with pytest.raises(TranscodingNotRegisteredError):
        PLAN.encode({"x": Unknown(1), "amount": Decimal("1.5")})

"""The read model's document of a plan: a `PlanRecord`'s state as typed JSON, by msgspec.

The projection writes a plan's whole state with every event it applies, and every
instance that does not fold decodes it again after each edit. The library's JSON
transcoder, which calls back into Python for every part of the plan, took about 240 µs
of the writer's CPU per event to encode (most of the JSON part of a fold and save);
msgspec encodes the typed state in C, and decodes it against the same types.

`PlanRecordState` lists the attributes of a `PlanRecord` (what ``Snapshot.take`` would
collect): a record with an attribute missing here cannot be encoded (tests compare them),
and a change of these fields is a change of the read model's shape
(``projections.views.READ_MODEL_VERSION``), so rows written before are rebuilt.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

import msgspec

from domain import items
from domain.plan import PlanRecord

_NOT_STATE = ("_id", "_version", "_pending_events")
"""A record's attributes that are not its state: its id and version are the row's columns."""


class PlanRecordState(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A `PlanRecord`'s state (class version 1): `ClientPlan`'s attributes, notes and measures."""

    _created_on: datetime
    _modified_on: datetime
    opened_at: datetime
    opened_on: date
    client: items.Client
    responsibility: items.Responsibility
    consents: dict[str, items.Consent]
    needs: dict[str, items.Need]
    goals: dict[str, items.Goal]
    members: dict[str, items.Member]
    steps: dict[str, items.Step]
    handovers: list[items.Handover]
    closing: items.Closing | None
    receipts: dict[str, items.Receipt]
    measures: list[items.Measure]
    notes: list[items.Note]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PlanRecordState)


def encode_record(record: PlanRecord) -> str:
    """The record's state as the read model's JSON text (without its id and version)."""
    state = {name: value for name, value in vars(record).items() if name not in _NOT_STATE}
    return _encoder.encode(PlanRecordState(**state)).decode()


def decode_record(plan_id: str, version: int, document: str) -> PlanRecord:
    """The `PlanRecord` of ``document`` (what :func:`encode_record` wrote), at ``version``.

    Made as the library's ``Snapshot.mutate`` makes an aggregate (no constructor call).
    """
    state = _decoder.decode(document)
    attributes: dict[str, Any] = {name: getattr(state, name) for name in state.__struct_fields__}
    attributes.update(_id=uuid.UUID(plan_id), _version=version, _pending_events=[])
    record = object.__new__(PlanRecord)
    object.__setattr__(record, "__dict__", attributes)
    return record

"""How the plan's value types are written into stored events and snapshots."""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, Transcoding, UUIDAsHex

from domain import items
from domain.values import Actor


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


class StructTranscoding(Transcoding):
    """One transcoding per msgspec Struct type, named after the type.

    msgspec turns the Struct (and whatever it nests: dates, actors, lists of
    changes) into plain JSON values and back, validating the shape on the
    way in.
    """

    def __init__(self, struct_type: type[msgspec.Struct]):
        self.type = struct_type
        self.name = struct_type.__name__

    def encode(self, obj: msgspec.Struct) -> Any:
        return msgspec.to_builtins(obj)

    def decode(self, data: Any) -> msgspec.Struct:
        return msgspec.convert(data, self.type)


STRUCT_TYPES: tuple[type[msgspec.Struct], ...] = (
    Actor,
    items.Client,
    items.Responsibility,
    items.Consent,
    items.Need,
    items.Goal,
    items.Member,
    items.Step,
    items.Measure,
    items.Note,
    items.Handover,
    items.Closing,
    items.Receipt,
)


def register_plan_transcodings(transcoder: JSONTranscoder) -> None:
    transcoder.register(DateAsISO())
    for struct_type in STRUCT_TYPES:
        transcoder.register(StructTranscoding(struct_type))


def plan_transcoder() -> JSONTranscoder:
    """A transcoder for everything a plan's events and snapshots hold."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    register_plan_transcodings(transcoder)
    return transcoder

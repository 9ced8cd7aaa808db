"""How the plan's value types are written into stored events and snapshots."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
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
        self.holds_floats = _may_hold_float(msgspec.inspect.type_info(struct_type), set())
        """Whether a value of the type can hold a float (msgspec writes floats
        differently from the library's JSON encoder: `1e16`, not `1e+16`)."""

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


def _may_hold_float(info: msgspec.inspect.Type, seen: set[type]) -> bool:
    if isinstance(info, (msgspec.inspect.FloatType, msgspec.inspect.AnyType, msgspec.inspect.CustomType)):
        return True
    fields = getattr(info, "fields", None)
    if fields is not None:
        if info.cls in seen:
            return False
        seen.add(info.cls)
        return any(_may_hold_float(field.type, seen) for field in fields)
    return any(_may_hold_float(part, seen) for part in _parts(info))


def _parts(info: msgspec.inspect.Type) -> Iterable[msgspec.inspect.Type]:
    """The types a collection, union or annotated type is made of."""
    parts = [getattr(info, name, None) for name in ("item_type", "key_type", "value_type", "type")]
    parts += [*getattr(info, "types", ()), *getattr(info, "item_types", ())]
    return [part for part in parts if part is not None]


class _Unusual(Exception):
    """A value the fast path leaves to the library's encoder."""


_AS_THEY_ARE = frozenset((str, int, bool, type(None)))

_JSON_NATIVE = (str, int, float, list, tuple, dict)
"""The library's encoder writes these (subclasses too) as they are, even of a registered type."""


class PlanTranscoder(JSONTranscoder):
    """The library's JSON transcoder, writing with msgspec: the same bytes, faster.

    The library's encoder calls back into Python for every value it cannot write
    (a date, a UUID, each Struct, which `msgspec.to_builtins` then turns into a
    dict that the encoder walks again). Here the event's state is walked once in
    Python only down to the registered values, each put in the library's
    `{"_type_": name, "_data_": ...}` envelope, and msgspec writes the rest,
    Structs included, in C. The output is byte for byte the library's, so the
    library's decoder reads it and nothing stored changes; floats go in as the
    library writes them (`msgspec.Raw`), and anything the walk does not know
    (a non-str dict key, an unregistered type) is left to the library's encoder.
    """

    def __init__(self) -> None:
        super().__init__()
        self._writer = msgspec.json.Encoder()
        self._envelopes: dict[type, Callable[[Any], dict[str, Any]]] = {}

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        if not issubclass(transcoding.type, _JSON_NATIVE):
            self._envelopes[transcoding.type] = self._envelope_maker(transcoding)

    def _envelope_maker(self, transcoding: Transcoding) -> Callable[[Any], dict[str, Any]]:
        name = transcoding.name
        if isinstance(transcoding, StructTranscoding) and not transcoding.holds_floats:
            return lambda obj: {"_type_": name, "_data_": obj}
        encode, ready = transcoding.encode, self._ready

        def envelope(obj: Any) -> dict[str, Any]:
            data = encode(obj)
            return {"_type_": name, "_data_": data if type(data) in _AS_THEY_ARE else ready(data)}

        return envelope

    def encode(self, obj: Any) -> bytes:
        try:
            ready = self._ready(obj)
        except _Unusual:
            return super().encode(obj)
        return self._writer.encode(ready)

    def _ready(self, obj: Any) -> Any:
        """`obj` with each registered value in its envelope, ready for msgspec."""
        kind = type(obj)
        if kind in _AS_THEY_ARE:
            return obj
        if kind is dict:
            ready = {}
            for key, value in obj.items():
                if type(key) is not str:
                    raise _Unusual
                ready[key] = value if type(value) in _AS_THEY_ARE else self._ready(value)
            return ready
        envelope = self._envelopes.get(kind)
        if envelope is not None:
            return envelope(obj)
        if kind is list or kind is tuple:
            return [value if type(value) in _AS_THEY_ARE else self._ready(value) for value in obj]
        if kind is float:
            return msgspec.Raw(_json_float(obj).encode())
        if isinstance(obj, str):
            return str.__str__(obj)
        raise _Unusual


def _json_float(value: float) -> str:
    """A float as the `json` module writes it."""
    if math.isfinite(value):
        return float.__repr__(value)
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def register_plan_transcodings(transcoder: JSONTranscoder) -> None:
    transcoder.register(DateAsISO())
    for struct_type in STRUCT_TYPES:
        transcoder.register(StructTranscoding(struct_type))


def plan_transcoder() -> JSONTranscoder:
    """A transcoder for everything a plan's events and snapshots hold."""
    transcoder = PlanTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    register_plan_transcodings(transcoder)
    return transcoder

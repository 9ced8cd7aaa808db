"""A mapper that encrypts each plan's stored events with the plan's own key.

The library's cipher is one key per application; a key per plan needs the
mapper to choose the key by the event's originator. The whole state of a
plan's event or snapshot is encrypted (names, free texts and contact
details are all in it); the topic, the plan id and the version stay in the
clear so the store can order and select events. The originator, version and
topic are bound to the ciphertext as associated data, so a stored state
cannot be moved to another event unnoticed.

Events of a plan whose key was erased come back as `ErasedPlanEvent`
placeholders: followers of the notification log skip them instead of
stopping at them.

A plan's snapshot is encoded by its own typed codec (`domain.snapshots`) before it is
encrypted; a snapshot in the library's JSON, stored before, still decodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEvent, Snapshot
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic

from domain.errors import PlanErased
from domain.keys import Keyring
from domain.plan import ClientPlan
from domain.snapshots import decode_plan_snapshot, encode_plan_snapshot, is_typed_snapshot

ENCRYPTED = b"PK1"
"""Marks a state encrypted with a plan key (a plain JSON state starts with '{')."""

PLAN_TOPIC = get_topic(ClientPlan)


@dataclass(frozen=True)
class ErasedPlanEvent(DomainEvent):
    """Stands for a stored event of an erased plan; its content is gone."""

    topic: str


class PlanKeyMapper(Mapper):
    def __init__(self, transcoder: Transcoder, keyring: Keyring):
        super().__init__(transcoder)
        self.keyring = keyring

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        if type(domain_event) is Snapshot and domain_event.topic == PLAN_TOPIC:
            stored = StoredEvent(
                originator_id=domain_event.originator_id,
                originator_version=domain_event.originator_version,
                topic=get_topic(type(domain_event)),
                state=encode_plan_snapshot(domain_event),
            )
        else:
            stored = super().to_stored_event(domain_event)
        if not _is_personal(domain_event):
            return stored
        cipher = self.keyring.cipher_for(stored.originator_id)
        if cipher is None:
            raise LookupError(f"No key for plan {stored.originator_id}: refusing to store it unencrypted.")
        nonce = os.urandom(12)
        sealed = cipher.encrypt(nonce, stored.state, _associated_data(stored))
        return StoredEvent(
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=stored.topic,
            state=ENCRYPTED + nonce + sealed,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        state = stored_event.state
        if not state.startswith(ENCRYPTED):
            return super().to_domain_event(stored_event)
        try:
            cipher = self.keyring.cipher_for(_as_uuid(stored_event.originator_id))
        except PlanErased:
            return ErasedPlanEvent(
                originator_id=_as_uuid(stored_event.originator_id),
                originator_version=stored_event.originator_version,
                timestamp=datetime.fromtimestamp(0, UTC),
                topic=stored_event.topic,
            )
        if cipher is None:
            raise LookupError(f"No key for encrypted events of {stored_event.originator_id}.")
        body = state[len(ENCRYPTED) :]
        plain = cipher.decrypt(body[:12], body[12:], _associated_data(stored_event))
        if is_typed_snapshot(plain):
            return decode_plan_snapshot(plain, _as_uuid(stored_event.originator_id), stored_event.originator_version)
        return super().to_domain_event(
            StoredEvent(
                originator_id=stored_event.originator_id,
                originator_version=stored_event.originator_version,
                topic=stored_event.topic,
                state=plain,
            )
        )


def _is_personal(domain_event: Any) -> bool:
    if isinstance(domain_event, ClientPlan.Event):
        return True
    return getattr(domain_event, "topic", None) == PLAN_TOPIC


def _associated_data(stored: StoredEvent) -> bytes:
    return f"{stored.originator_id}|{stored.originator_version}|{stored.topic}".encode()


def _as_uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))

"""The record that a plan was erased at the end of its retention period.

It is an aggregate of its own, stored unencrypted and holding no personal
data of the client: the plan's id, when, by whom and why. Read models that
see it drop the plan's rows.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from eventsourcing.domain import Aggregate

from domain.errors import RuleViolation
from domain.inputs import required_text
from domain.plan import ClientPlan
from domain.values import Actor


class ErasureRecord(Aggregate):
    class Erased(Aggregate.Created):
        plan_id: str
        erased_by: Actor
        reason: str

    def __init__(self, plan_id: str, erased_by: Actor, reason: str):
        self.plan_id = plan_id
        self.erased_by = erased_by
        self.reason = reason

    @staticmethod
    def id_for(plan_id: uuid.UUID) -> uuid.UUID:
        return uuid.uuid5(plan_id, "erasure")

    @classmethod
    def record(cls, *, plan: ClientPlan, by: Actor, reason: str, at: datetime) -> ErasureRecord:
        if not plan.is_closed:
            raise RuleViolation("Only a closed plan can be erased.")
        return cls._create(
            cls.Erased,
            id=cls.id_for(plan.id),
            timestamp=at,
            plan_id=str(plan.id),
            erased_by=by,
            reason=required_text(reason, "reason"),
        )

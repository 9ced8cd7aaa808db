"""The read model's typed document of a plan (projections.codec)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.application import PlanService
from domain.demo import load_demo
from domain.plan import PlanRecord
from domain.storage import StoreSettings
from projections.codec import PlanRecordState, decode_record, encode_record
from tests.projections.helpers import all_plan_ids, random_commands, state_of


@pytest.fixture
def records(data_dir: Path) -> Iterator[list[PlanRecord]]:
    """Every plan of the demo and of random commands, replayed as the read model folds them."""
    service = PlanService(StoreSettings.from_environ({"POLKU_STORE": "sqlite", "POLKU_DATA_DIR": str(data_dir)}))
    try:
        load_demo(service)
        random_commands(service, random.Random(31), 60, "codec")
        yield [service.plan_record(plan_id) for plan_id in all_plan_ids(service)]
    finally:
        service.close()


def test_the_document_holds_exactly_the_records_state(records: list[PlanRecord]) -> None:
    attributes = set(vars(records[0])) - {"_id", "_version", "_pending_events"}
    assert set(PlanRecordState.__struct_fields__) == attributes
    assert any(record.notes for record in records) and any(record.measures for record in records)


def test_a_record_round_trips(records: list[PlanRecord]) -> None:
    for record in records:
        decoded = decode_record(str(record.id), record.version, encode_record(record))
        assert type(decoded) is PlanRecord
        assert (decoded.id, decoded.version) == (record.id, record.version)
        assert state_of(decoded) == state_of(record)


def test_a_record_with_an_attribute_the_document_lacks_is_not_encoded(records: list[PlanRecord]) -> None:
    record = records[0]
    record.something_new = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        encode_record(record)

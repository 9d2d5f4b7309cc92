"""The committed catalog: valid AsyncAPI 3.0, complete, true to shared/kafka.py, and freshly generated."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import orjson
import pytest
import yaml

from shared.contracts import REGISTRY, FraudDecision, FraudScored
from shared.contracts.base import JsonDict
from shared.contracts.topics import ALL, dead_letter
from shared.kafka import dead_letter_headers, encode, headers_for, new_envelope
from shopctl.catalog import asyncapi
from shopctl.catalog.__main__ import main
from shopctl.catalog.release import generated_files
from shopctl.catalog.schemas import Catalog, read_released
from shopctl.catalog.wire import WireContract, example_records

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "schemas"
DOCS = ROOT / "docs" / "events.md"


@pytest.fixture(scope="module")
def document() -> JsonDict:
    loaded: object = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def wire() -> WireContract:
    return WireContract.load(SCHEMAS)


def test_the_committed_document_is_valid_asyncapi_3(document: JsonDict) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert asyncapi.validation_errors(document) == []


def test_the_validation_catches_an_invalid_document(document: JsonDict) -> None:
    broken = copy.deepcopy(document)
    del broken["info"]["title"]
    broken["operations"]["order.events.publish"]["action"] = "publish"

    errors = asyncapi.validation_errors(broken)

    assert any(error.startswith("info:") and "'title' is a required property" in error for error in errors)
    assert any(error.startswith("operations/order.events.publish/action") for error in errors)


def test_the_vendored_specification_is_the_unchanged_upstream_file() -> None:
    readme = (asyncapi.SPECIFICATION.parent / "README.md").read_text()
    digest = hashlib.sha256(asyncapi.SPECIFICATION.read_bytes()).hexdigest()
    assert digest in readme, "update the checksum in the vendor README when updating the schema"
    assert (asyncapi.SPECIFICATION.parent / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_every_topic_and_its_dead_letter_twin_is_a_channel(document: JsonDict) -> None:
    addresses = {c["address"] for c in document["channels"].values()}
    for topic in ALL:
        assert {topic, dead_letter(topic)} <= addresses


def test_every_registered_event_type_is_a_message_of_its_topic(wire: WireContract) -> None:
    for event_type, model in REGISTRY.items():
        assert (event_type, model.VERSION) in wire.event_types(model.TOPIC), event_type


def test_the_headers_are_the_ones_shared_kafka_sets(document: JsonDict) -> None:
    scored = FraudScored(order_id="o-1", decision=FraudDecision.APPROVE, score=1)
    envelope = new_envelope(scored, source="fraud", correlation_id="c")
    schemas = document["components"]["schemas"]

    assert schemas["CloudEventsHeaders"]["required"] == [name for name, _ in headers_for(envelope)]
    added = dead_letter_headers([], error="e", consumer="c", topic="t", partition=0, offset=1)
    assert schemas["DeadLetterHeaders"]["required"] == [name for name, _ in added]
    placed = document["components"]["messages"]["order.placed.v1"]
    assert placed["bindings"]["kafka"]["key"]["type"] == "string"
    assert placed["x-key-field"] == "order_id"
    assert document["components"]["messages"]["inventory.product_upserted.v1"]["x-key-field"] == "sku"


def test_every_message_has_an_example_that_is_a_valid_record_of_its_topic(
    document: JsonDict, wire: WireContract
) -> None:
    records = example_records(document)
    for topic, key, value, headers in records:
        assert wire.problems(topic, key, value, headers) == [], f"{topic}: {value[:80]!r}"
    messages = sum(len(c["messages"]) for c in document["channels"].values())
    assert len(records) == messages, "one example per message"


def record_of(event: FraudScored) -> tuple[bytes, bytes, list[tuple[str, bytes | None]]]:
    envelope = new_envelope(event, source="fraud", correlation_id="c")
    return envelope.subject.encode(), encode(envelope), list(headers_for(envelope))


def test_a_record_the_document_does_not_describe_is_reported(wire: WireContract) -> None:
    key, value, headers = record_of(FraudScored(order_id="o-1", decision=FraudDecision.REJECT, score=99))
    assert wire.problems("fraud.events", key, value, headers) == []

    envelope = orjson.loads(value)
    unknown = orjson.dumps({**envelope, "type": "fraud.teleported"})
    no_score = orjson.dumps({**envelope, "data": {k: v for k, v in envelope["data"].items() if k != "score"}})
    no_type_header = [(n, v) for n, v in headers if n != "ce_type"]

    assert wire.problems("fraud.events", key, unknown, headers) == [
        "fraud.teleported v1 is not a message of fraud.events in the catalog"
    ]
    assert any("payload" in p and "score" in p for p in wire.problems("fraud.events", key, no_score, headers))
    assert any("ce_type" in p for p in wire.problems("fraud.events", key, value, no_type_header))
    assert any(p.startswith("key:") for p in wire.problems("fraud.events", b"o-2", value, headers))
    assert wire.problems("order.events", key, value, headers) == [
        "fraud.scored v1 is not a message of order.events in the catalog"
    ]


def test_a_dead_letter_needs_its_dlq_headers(wire: WireContract) -> None:
    key, value, headers = record_of(FraudScored(order_id="o-1", decision=FraudDecision.REJECT, score=99))
    letter = dead_letter_headers(
        headers, error="boom", consumer="order", topic="fraud.events", partition=0, offset=3
    )

    assert wire.problems("fraud.events.dlq", key, b"\x00 garbage", letter) == []
    assert any("dlq_error" in p for p in wire.problems("fraud.events.dlq", key, value, headers))


def test_every_event_type_and_version_is_published_in_the_committed_catalog() -> None:
    """A new type or version must be generated before it ships; a compatible change to a published
    one (an optional field) passes and is only noted by `make schemas-check`."""
    catalog = Catalog.of_platform()
    released = read_released(SCHEMAS)

    for path in generated_files(catalog, released):
        committed = SCHEMAS / path
        assert committed.exists(), f"{committed} is missing: run `make schemas`"
    document = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
    published = orjson.dumps(document["components"]["messages"]).decode()
    for event_type in catalog.events:
        assert event_type in published, f"{event_type} is not in schemas/asyncapi.yaml: run `make schemas`"


def test_the_check_command_passes_on_the_repository_and_fails_on_an_empty_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--schemas", str(SCHEMAS), "--docs", str(DOCS)]) == 0
    assert "are up to date" in capsys.readouterr().out

    assert main(["check", "--schemas", str(tmp_path), "--docs", str(tmp_path / "events.md")]) == 1
    assert "is missing: run `make schemas`" in capsys.readouterr().err

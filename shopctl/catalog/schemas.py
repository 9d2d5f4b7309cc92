"""The JSON Schemas of the catalog: one per event type and version, and one of the envelope.

Schemas are pydantic's validation schemas (JSON Schema 2020-12): a field with a default is not
`required`, because records written before the field was added lack it. Each file carries one
example payload, which the compatibility check also feeds through the upcasters after a version bump.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from shared.contracts import REGISTRY, Envelope, Event, topics
from shared.kafka import new_envelope
from shopctl.catalog.examples import EXAMPLES

JsonDict = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
GENERATED = (
    "Generated from shared/contracts by `make schemas`. A released version's file never changes "
    "incompatibly: see docs/events.md, 'Versions and compatibility'."
)
ENVELOPE_PATH = PurePosixPath("envelope.json")
EVENTS_DIR = PurePosixPath("events")
_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.json")
# Example envelopes are pinned, so that generating twice gives the same files.
EXAMPLE_TIME = datetime(2026, 11, 25, 12, 0, 5, tzinfo=UTC)
EXAMPLE_CORRELATION_ID = "5f0c2a4e-8d17-4b6a-9e3c-1a2b3c4d5e6f"


class CatalogError(ValueError):
    """The event models cannot be catalogued as they are; each problem says what to do."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def event_path(event_type: str, version: int) -> PurePosixPath:
    return EVENTS_DIR / event_type / f"v{version}.json"


def owner(topic: str) -> str:
    """The service that owns a topic, by the naming rule `<service>.<what>`."""
    return topic.split(".", 1)[0]


@dataclass(frozen=True)
class Catalog:
    """What the catalog is generated from: the event models by wire type, one example each, the topics."""

    events: Mapping[str, type[Event]]
    examples: Mapping[str, Event]
    topics: Sequence[str]

    @classmethod
    def of(
        cls, events: Iterable[type[Event]], topics: Sequence[str], examples: Iterable[Event] = ()
    ) -> Catalog:
        """The catalog of `events`; each one's example is its model's own, else the one in `examples`."""
        by_type = {event.TYPE: event for event in events}
        given = {example.TYPE: example for example in examples}
        found: dict[str, Event] = {}
        problems: list[str] = []
        for event_type, model in sorted(by_type.items()):
            try:
                example = _model_example(model) or given.get(event_type)
            except ValidationError as error:
                problems.append(f"{event_type}: its model's example is not a valid {model.__name__}: {error}")
                continue
            if example is None:
                problems.append(
                    f"{event_type} has no example: give {model.__name__} one in its model_config "
                    '(json_schema_extra={"examples": [...]}) or add one to shopctl/catalog/examples.py'
                )
            elif type(example) is not model:
                problems.append(
                    f"{event_type}: its example is a {type(example).__name__}, not a {model.__name__}"
                )
            else:
                found[event_type] = example
        if problems:
            raise CatalogError(problems)
        every_topic = [*topics, *sorted({model.TOPIC for model in by_type.values()} - set(topics))]
        return cls(events=by_type, examples=found, topics=every_topic)

    @classmethod
    def of_platform(cls) -> Catalog:
        return cls.of(REGISTRY.values(), topics.ALL, EXAMPLES)

    def types_on(self, topic: str) -> list[str]:
        return sorted(event_type for event_type, model in self.events.items() if model.TOPIC == topic)

    def key_field(self, event_type: str) -> str:
        """The payload field the record key (the envelope's `subject`) is taken from."""
        return key_field(self.examples[event_type])


def _model_example(model: type[Event]) -> Event | None:
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, Mapping) else None
    if isinstance(examples, list) and examples and isinstance(examples[0], Mapping):
        return model.model_validate(examples[0])
    return None


def key_field(example: Event) -> str:
    """The one top-level field whose value is the example's subject (its Kafka key)."""
    subject = example.subject()
    fields = [name for name, value in example.model_dump(mode="json").items() if value == subject]
    if len(fields) != 1:
        found = ", ".join(fields) or "none"
        raise CatalogError(
            [
                f"{example.TYPE}: the key {subject!r} must be the value of exactly one field of its "
                f"example (found: {found}); give the example's other fields other values"
            ]
        )
    return fields[0]


def payload_schema(model: type[Event], example: Event) -> JsonDict:
    """The JSON Schema of the event's payload (the envelope's `data`), with its example."""
    schema = model.model_json_schema()
    return {
        "$schema": DIALECT,
        "$comment": GENERATED,
        **schema,
        "examples": [example.model_dump(mode="json")],
    }


def envelope_schema() -> JsonDict:
    return {"$schema": DIALECT, "$comment": GENERATED, **Envelope.model_json_schema()}


def example_envelope(example: Event, *, version: int | None = None, data: JsonDict | None = None) -> Envelope:
    """The example as a record's value: a pinned id, time and correlation id; optionally an older version."""
    envelope = new_envelope(
        example,
        source=owner(example.TOPIC),
        correlation_id=EXAMPLE_CORRELATION_ID,
        event_id=str(_example_id(example.TYPE, version or example.VERSION)),
    )
    changes: JsonDict = {"time": EXAMPLE_TIME}
    if version is not None:
        changes["version"] = version
    if data is not None:
        changes["data"] = data
    return envelope.model_copy(update=changes)


def _example_id(event_type: str, version: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"order-platform/catalog/example/{event_type}/v{version}"))


def render_json(document: JsonDict) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Released:
    """The schemas committed under schemas/: the released versions of each event type, and the envelope."""

    events: Mapping[tuple[str, int], JsonDict]
    envelope: JsonDict | None

    def versions(self, event_type: str) -> list[int]:
        return sorted(version for name, version in self.events if name == event_type)

    def types(self) -> set[str]:
        return {name for name, _ in self.events}


def read_released(schema_dir: Path) -> Released:
    """Every committed event schema under `schema_dir` (empty when nothing was generated yet)."""
    events: dict[tuple[str, int], JsonDict] = {}
    problems: list[str] = []
    events_dir = schema_dir / EVENTS_DIR
    for path in sorted(events_dir.glob("*/*")) if events_dir.is_dir() else []:
        match = _VERSION_FILE.fullmatch(path.name)
        if match is None:
            problems.append(f"{path}: unexpected file; event schemas are named v<version>.json")
            continue
        try:
            events[(path.parent.name, int(match.group(1)))] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            problems.append(f"{path}: not JSON ({error}); restore it from version control")
    if problems:
        raise CatalogError(problems)
    envelope_file = schema_dir / ENVELOPE_PATH
    envelope = json.loads(envelope_file.read_text(encoding="utf-8")) if envelope_file.exists() else None
    return Released(events=events, envelope=envelope)

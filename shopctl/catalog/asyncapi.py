"""The AsyncAPI 3.0 document of the platform's topics, its validation, and records checked against it.

Every topic is a channel with one message per event type and version that may be on it (a superseded
version stays listed: older records remain on the topic until retention drops them). Each message
gives the CloudEvents headers shared/kafka.py sets, the record key (the payload field `subject()`
returns), the payload (the envelope, its `data` referencing `events/<type>/v<n>.json`) and an
example. Each topic's dead-letter twin `<topic>.dlq` is a channel too, with the `dlq_*` headers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.metadata import version as installed_version
from pathlib import Path, PurePosixPath

import jsonschema
import orjson
import yaml

from shared.contracts import Envelope
from shared.contracts.topics import dead_letter
from shared.kafka import dead_letter_headers, encode, headers_for
from shared.settings import SharedSettings
from shopctl.catalog.glossary import event_meaning
from shopctl.catalog.schemas import (
    ENVELOPE_PATH,
    Catalog,
    CatalogError,
    JsonDict,
    Released,
    event_path,
    example_envelope,
    owner,
)

ASYNCAPI_PATH = PurePosixPath("asyncapi.yaml")
SPECIFICATION = Path(__file__).parent / "vendor" / "asyncapi-3.0.0.schema.json"
KAFKA_BINDING_VERSION = "0.5.0"
CONTENT_TYPE = "application/cloudevents+json"
HEADER = (
    "# The platform's topics, generated from shared/contracts by `make schemas`: do not edit by hand.\n"
    "# Payload schemas are the JSON Schema files beside this one; docs/events.md explains it all.\n"
)

# What each header shared/kafka.py sets means; generation refuses a header missing here.
HEADER_MEANINGS = {
    "content-type": "Always `application/cloudevents+json`: the value is the whole envelope as JSON "
    "(CloudEvents structured mode).",
    "ce_specversion": "The CloudEvents version, `1.0`.",
    "ce_id": "The envelope's `id`, unique per event. A redelivered or re-published event keeps it, "
    "so deduplicate on it.",
    "ce_type": "The envelope's `type`: the event type.",
    "ce_source": "The envelope's `source`: the service that emitted the event.",
    "ce_subject": "The envelope's `subject`, which is also the record key.",
    "ce_time": "The envelope's `time`: when the event happened, RFC 3339 in UTC.",
    "ce_dataschemaversion": "The envelope's `version`: the payload's schema is "
    "`events/<type>/v<version>.json`.",
    "correlation_id": "The envelope's `correlation_id`: shared by every event one request caused, "
    "such as all the events of one order's saga.",
}
CONSTANT_HEADERS = frozenset({"content-type", "ce_specversion"})
HEADER_FORMATS = {"ce_id": "uuid", "ce_time": "date-time"}
DEAD_LETTER_MEANINGS = {
    "dlq_error": "Why the record was dead-lettered: the decoding or handling error (at most 4000 bytes).",
    "dlq_consumer": "The consumer that gave up on the record. Every consumer of the source topic "
    "dead-letters on its own, so one bad record can arrive once per consumer.",
    "dlq_source_topic": "The topic the record was read from.",
    "dlq_source_partition": "Its partition there.",
    "dlq_source_offset": "Its offset there.",
}


def header_names(sample: Envelope) -> list[tuple[str, str]]:
    """The headers shared/kafka.py puts on every record, with their values for `sample`."""
    return [(name, (value or b"").decode()) for name, value in headers_for(sample)]


def dead_letter_header_names() -> list[str]:
    added = dead_letter_headers([], error="e", consumer="c", topic="t", partition=0, offset=0)
    return [name for name, _ in added]


def _undocumented(names: Sequence[str], meanings: Mapping[str, str]) -> list[str]:
    return [
        f"header {name!r} (shared/kafka.py) has no meaning in shopctl/catalog/asyncapi.py: add one"
        for name in names
        if name not in meanings
    ]


def cloudevents_headers_schema(sample: Envelope) -> JsonDict:
    headers = header_names(sample)
    problems = _undocumented([name for name, _ in headers], HEADER_MEANINGS)
    if problems:
        raise CatalogError(problems)
    properties: JsonDict = {}
    for name, value in headers:
        schema: JsonDict = {"type": "string", "description": HEADER_MEANINGS[name]}
        if name in CONSTANT_HEADERS:
            schema["const"] = value
        if name in HEADER_FORMATS:
            schema["format"] = HEADER_FORMATS[name]
        properties[name] = schema
    return {"type": "object", "required": [name for name, _ in headers], "properties": properties}


def dead_letter_headers_schema() -> JsonDict:
    names = dead_letter_header_names()
    problems = _undocumented(names, DEAD_LETTER_MEANINGS)
    if problems:
        raise CatalogError(problems)
    properties: JsonDict = {
        name: {"type": "string", "description": DEAD_LETTER_MEANINGS[name]} for name in names
    }
    for name in ("dlq_source_partition", "dlq_source_offset"):
        if name in properties:
            properties[name]["pattern"] = "^[0-9]+$"
    return {
        "type": "object",
        "description": "The original record's headers, unchanged (a null value stays null), plus these.",
        "required": names,
        "properties": properties,
    }


def message_id(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}"


def dead_letter_message_id(topic: str) -> str:
    return f"{topic}.dead_letter"


def _example_headers(envelope_headers: Sequence[tuple[str, bytes | None]]) -> JsonDict:
    return {name: None if value is None else value.decode() for name, value in envelope_headers}


def _event_message(catalog: Catalog, event_type: str, version: int, schema: JsonDict) -> JsonDict:
    model = catalog.events[event_type]
    key = catalog.key_field(event_type)
    description = event_meaning(event_type, str(schema.get("description", ""))) or f"A {model.__name__}."
    if version < model.VERSION:
        description += (
            f"\n\nSuperseded by v{model.VERSION}: records of v{version} stay on the topic until "
            "retention drops them (or come back in a replay); the services upcast them on decode."
        )
    description += f"\n\nKey: the payload's `{key}` (also the envelope's `subject`)."
    message: JsonDict = {
        "name": event_type,
        "title": f"{model.__name__} v{version}" + (" (superseded)" if version < model.VERSION else ""),
        "summary": description.split("\n", 1)[0],
        "description": description,
        "contentType": CONTENT_TYPE,
        "x-event-type": event_type,
        "x-event-version": version,
        "x-key-field": key,
        "headers": {
            "allOf": [
                {"$ref": "#/components/schemas/CloudEventsHeaders"},
                {
                    "type": "object",
                    "properties": {
                        "ce_type": {"const": event_type},
                        "ce_dataschemaversion": {"const": str(version)},
                    },
                },
            ]
        },
        "payload": {
            "allOf": [
                {"$ref": str(ENVELOPE_PATH)},
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": event_type},
                        "version": {"const": version},
                        "subject": {"type": "string", "description": f"The payload's `{key}`."},
                        "data": {"$ref": str(event_path(event_type, version))},
                    },
                },
            ]
        },
        "correlationId": {"$ref": "#/components/correlationIds/saga"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"The payload's `{key}`, UTF-8."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
    examples = schema.get("examples")
    if isinstance(examples, list) and examples and isinstance(examples[0], dict):
        envelope = example_envelope(catalog.examples[event_type], version=version, data=examples[0])
        message["examples"] = [
            {
                "name": f"{event_type}-v{version}",
                "summary": f"A {event_type} v{version} record (key {envelope.subject!r})",
                "headers": _example_headers(headers_for(envelope)),
                "payload": orjson.loads(encode(envelope)),
            }
        ]
    return message


def _dead_letter_message(catalog: Catalog, topic: str) -> JsonDict:
    message: JsonDict = {
        "name": "dead_letter",
        "title": f"Dead letter of {topic}",
        "summary": f"A record a consumer of {topic} could not decode or handle, as it was consumed.",
        "description": (
            f"The record from `{topic}` byte for byte: its key, its value (usually an envelope of one of "
            f"`{topic}`'s messages, but possibly bytes nothing could decode) and its headers, plus the "
            "`dlq_*` headers saying why and where it failed. Nothing on a dead-letter topic was applied by "
            "the consumer that sent it there."
        ),
        "contentType": "application/octet-stream",
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {"description": "The original record's value, unchanged."},
        "bindings": {
            "kafka": {
                "key": {"description": "The original record's key, unchanged."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
    types = catalog.types_on(topic)
    if types:
        original = example_envelope(catalog.examples[types[0]])
        # Any consumer will do for the example, as long as it is not the topic's own producer.
        consumer = "inventory" if owner(topic) == "order" else "order"
        headers = dead_letter_headers(
            headers_for(original),
            error="invalid OrderPlaced: lines: List should have at least 1 item after validation, not 0",
            consumer=consumer,
            topic=topic,
            partition=1,
            offset=4711,
        )
        message["examples"] = [
            {
                "name": f"{topic}-dead-letter",
                "summary": f"A {original.type} record that {consumer} could not handle",
                "headers": _example_headers(headers),
                "payload": orjson.loads(encode(original)),
            }
        ]
    return message


def _keys_text(catalog: Catalog, topic: str) -> str:
    """Which payload field the records of a topic are keyed by, most common first."""
    types_by_key: dict[str, list[str]] = {}
    for event_type in catalog.types_on(topic):
        types_by_key.setdefault(catalog.key_field(event_type), []).append(event_type)
    if not types_by_key:
        return "No event types yet."
    ranked = sorted(types_by_key.items(), key=lambda item: (-len(item[1]), item[0]))
    if len(ranked) == 1:
        return f"Key: the payload's `{ranked[0][0]}`."
    others = "; ".join(f"`{key}` for {', '.join(types)}" for key, types in ranked[1:])
    return f"Key: the payload's `{ranked[0][0]}` ({others})."


def document(catalog: Catalog, current: Mapping[str, JsonDict], released: Released) -> JsonDict:
    """The AsyncAPI document: `current` holds each type's payload schema at its model's version."""
    if not catalog.examples:
        raise CatalogError(["the catalog has no event types"])
    sample = example_envelope(next(iter(catalog.examples.values())))
    messages: JsonDict = {}
    channels: JsonDict = {}
    operations: JsonDict = {}
    for topic in catalog.topics:
        ids: list[str] = []
        for event_type in catalog.types_on(topic):
            model = catalog.events[event_type]
            schemas = {
                version: released.events[(event_type, version)]
                for version in released.versions(event_type)
                if version < model.VERSION
            }
            schemas[model.VERSION] = current[event_type]
            for version, schema in sorted(schemas.items()):
                ids.append(message_id(event_type, version))
                messages[ids[-1]] = _event_message(catalog, event_type, version, schema)
        service = owner(topic)
        channels[topic] = {
            "address": topic,
            "title": topic,
            "description": f"The events the {service} service owns. {_keys_text(catalog, topic)} One key's "
            "records share a partition, so they are read in the order they were written.",
            "messages": {mid: {"$ref": f"#/components/messages/{mid}"} for mid in ids},
        }
        operations[f"{topic}.publish"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{topic}"},
            "title": f"The {service} service publishes {topic}",
            "messages": [{"$ref": f"#/channels/{topic}/messages/{mid}"} for mid in ids],
        }
        dlq, dlq_message = dead_letter(topic), dead_letter_message_id(topic)
        messages[dlq_message] = _dead_letter_message(catalog, topic)
        channels[dlq] = {
            "address": dlq,
            "title": dlq,
            "description": f"Records that a consumer of {topic} could not decode or handle, after its "
            "bounded retries; they never block the source topic.",
            "messages": {dlq_message: {"$ref": f"#/components/messages/{dlq_message}"}},
        }
        operations[f"{dlq}.publish"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{dlq}"},
            "title": f"Consumers of {topic} dead-letter what they cannot use",
            "messages": [{"$ref": f"#/channels/{dlq}/messages/{dlq_message}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Order platform events",
            "version": installed_version("order-platform"),
            "description": (
                "Every topic the platform's services publish, with its dead-letter twin. A record's value "
                "is a CloudEvents envelope (structured mode, JSON) whose `data` is the event's payload; "
                "the `ce_*` headers repeat the envelope's attributes; the key is the envelope's "
                "`subject`. Payload schemas are versioned per event type and never change "
                "incompatibly within a version: see docs/events.md."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "local": {
                "host": SharedSettings.model_fields["kafka_bootstrap_servers"].default,
                "protocol": "kafka",
                "description": "The local stack's broker (`make run`); elsewhere the broker is "
                "KAFKA_BOOTSTRAP_SERVERS.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {
                "CloudEventsHeaders": cloudevents_headers_schema(sample),
                "DeadLetterHeaders": dead_letter_headers_schema(),
            },
            "messages": messages,
            "correlationIds": {
                "saga": {
                    "description": "Shared by every event one request caused (one order's whole saga).",
                    "location": "$message.payload#/correlation_id",
                }
            },
        },
    }


class _BlockStrings(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so descriptions read as text."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStrings.add_representer(str, _represent_str)


def render_yaml(document_: JsonDict) -> str:
    body = yaml.dump(document_, Dumper=_BlockStrings, sort_keys=False, allow_unicode=True, width=110)
    return HEADER + body


@cache
def _specification() -> JsonDict:
    loaded: JsonDict = json.loads(SPECIFICATION.read_text(encoding="utf-8"))
    return loaded


def validation_errors(document_: JsonDict) -> list[str]:
    """Where the document breaks the AsyncAPI 3.0.0 schema (the vendored one; nothing is fetched)."""
    validator = jsonschema.Draft7Validator(_specification())
    found = []
    for error in validator.iter_errors(document_):
        # An error under a oneOf (a Reference or an object) says little; the cause that got deepest
        # into the document says what is wrong.
        while error.context:
            error = max(error.context, key=lambda cause: len(cause.absolute_path))
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        found.append(f"{where}: {error.message[:300]}")
    return sorted(found)

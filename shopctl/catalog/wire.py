"""Records checked against the committed catalog: is this record one the AsyncAPI document describes?

The payload and header schemas are resolved from the files under schemas/, offline, exactly as an
AsyncAPI tool would resolve the document's relative references.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from shopctl.catalog.asyncapi import ASYNCAPI_PATH, dead_letter_message_id, message_id
from shopctl.catalog.schemas import JsonDict

Record = tuple[str, bytes, bytes, list[tuple[str, bytes | None]]]


class WireContract:
    """The committed catalog as a checker of records: is this record one the document describes?"""

    def __init__(self, document: JsonDict, schema_dir: Path) -> None:
        self.document = document
        self._base = schema_dir.resolve().as_uri() + "/"
        resources = [(self._base + str(ASYNCAPI_PATH), Resource.from_contents(document, DRAFT7))]
        for path in sorted(schema_dir.rglob("*.json")):
            contents = json.loads(path.read_text(encoding="utf-8"))
            resources.append(
                (self._base + path.relative_to(schema_dir).as_posix(), Resource.from_contents(contents))
            )
        self._registry: Registry[Any] = Registry().with_resources(resources)

    @classmethod
    def load(cls, schema_dir: Path) -> WireContract:
        loaded: JsonDict = yaml.safe_load((schema_dir / ASYNCAPI_PATH).read_text(encoding="utf-8"))
        return cls(loaded, schema_dir)

    def topics(self) -> list[str]:
        return [str(channel["address"]) for channel in self.document["channels"].values()]

    def _messages(self, topic: str) -> dict[str, JsonDict]:
        for channel in self.document["channels"].values():
            if channel["address"] == topic:
                ids = [ref["$ref"].rsplit("/", 1)[1] for ref in channel["messages"].values()]
                return {mid: self.document["components"]["messages"][mid] for mid in ids}
        return {}

    def event_types(self, topic: str) -> set[tuple[str, int]]:
        """The (type, version) pairs the document lists for a topic."""
        return {
            (str(message["x-event-type"]), int(message["x-event-version"]))
            for message in self._messages(topic).values()
            if "x-event-type" in message
        }

    def _errors(self, pointer: str, instance: object) -> list[str]:
        validator = jsonschema.Draft202012Validator(
            {"$ref": f"{self._base}{ASYNCAPI_PATH}#/components/messages/{pointer}"}, registry=self._registry
        )
        return [
            f"{'/'.join(str(part) for part in error.absolute_path) or '(root)'}: {error.message[:200]}"
            for error in validator.iter_errors(instance)
        ]

    def problems(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
    ) -> list[str]:
        """How a record read from `topic` differs from the document (empty when it is one of its messages)."""
        header_map = {name: None if raw is None else raw.decode(errors="replace") for name, raw in headers}
        messages = self._messages(topic)
        if not messages:
            return [f"{topic} is not a channel of the catalog"]
        dead_letter_id = dead_letter_message_id(topic.removesuffix(".dlq"))
        if dead_letter_id in messages:
            return [f"headers: {e}" for e in self._errors(f"{dead_letter_id}/headers", header_map)]
        try:
            envelope = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            return ["the value is not JSON"]
        if not isinstance(envelope, dict) or "type" not in envelope or "version" not in envelope:
            return ["the value is not an envelope with a type and a version"]
        mid = message_id(str(envelope["type"]), envelope["version"])
        if mid not in messages:
            return [f"{envelope['type']} v{envelope['version']} is not a message of {topic} in the catalog"]
        problems = [f"payload: {e}" for e in self._errors(f"{mid}/payload", envelope)]
        problems += [f"headers: {e}" for e in self._errors(f"{mid}/headers", header_map)]
        key_field = messages[mid]["x-key-field"]
        data = envelope.get("data")
        expected_key = data.get(key_field) if isinstance(data, dict) else None
        if (
            key is None
            or key.decode(errors="replace") != expected_key
            or expected_key != envelope.get("subject")
        ):
            problems.append(
                f"key: {key!r} is not the payload's {key_field} and the subject ({expected_key!r})"
            )
        return problems


def example_records(document: JsonDict) -> list[Record]:
    """Every example of the document as a record (topic, key, value, headers), for self-checks."""
    records = []
    messages = document["components"]["messages"]
    for channel in document["channels"].values():
        for ref in channel["messages"].values():
            message = messages[ref["$ref"].rsplit("/", 1)[1]]
            for example in message.get("examples", []):
                payload = example["payload"]
                headers = [(n, None if v is None else str(v).encode()) for n, v in example["headers"].items()]
                key = str(payload.get("subject", "")).encode()
                records.append((str(channel["address"]), key, orjson.dumps(payload), headers))
    return records

"""Generate the catalog, and check the models against the released (committed) schemas.

The files under schemas/ are the release record: `events/<type>/v<n>.json` is what consumers of
version n were promised. `check` fails when a model has changed in a way that breaks them (unless the
version was bumped and an upcaster registered) and when a file is stale; `generate` refuses a
breaking change too, so regenerating can never quietly rewrite a released schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import yaml
from pydantic import ValidationError

from shared.contracts import Event
from shopctl.catalog import asyncapi, docs
from shopctl.catalog.compat import breaking_changes
from shopctl.catalog.schemas import (
    ENVELOPE_PATH,
    Catalog,
    CatalogError,
    JsonDict,
    Released,
    envelope_schema,
    event_path,
    payload_schema,
    read_released,
    render_json,
)

REGENERATE = "run `make schemas` and commit schemas/ and docs/events.md"


def current_schemas(catalog: Catalog) -> dict[str, JsonDict]:
    """Each event type's payload schema at its model's version."""
    return {name: payload_schema(model, catalog.examples[name]) for name, model in catalog.events.items()}


def generated_files(catalog: Catalog, released: Released) -> dict[PurePosixPath, str]:
    """What generation writes under schemas/ (released older versions are kept, not rewritten)."""
    current = current_schemas(catalog)
    document = asyncapi.document(catalog, current, released)
    invalid = asyncapi.validation_errors(document)
    if invalid:
        raise CatalogError(
            [f"the generated AsyncAPI document is not valid AsyncAPI 3.0.0: {e}" for e in invalid]
        )
    files = {
        event_path(name, catalog.events[name].VERSION): render_json(schema)
        for name, schema in current.items()
    }
    files[ENVELOPE_PATH] = render_json(envelope_schema())
    files[asyncapi.ASYNCAPI_PATH] = asyncapi.render_yaml(document)
    return files


def compatibility_problems(catalog: Catalog, released: Released) -> list[str]:
    """Every change to the models that would break a consumer of the released schemas."""
    problems: list[str] = []
    for gone in sorted(released.types() - set(catalog.events)):
        problems.append(
            f"{gone}: released (schemas/events/{gone}/) but no model registers it any more, so its consumers "
            "would silently get nothing. Keep the model; to retire the type for good, delete its directory "
            "in a reviewed change and say so in docs/events.md"
        )
    for event_type in sorted(catalog.events):
        versions = released.versions(event_type)
        if versions:
            problems += _version_problems(
                catalog, event_type, versions[-1], released.events[(event_type, versions[-1])]
            )
    if released.envelope is not None:
        problems += [
            f"the envelope: {change} — breaks every consumer, and the envelope has no version: only add "
            "optional fields to it"
            for change in breaking_changes(released.envelope, envelope_schema())
        ]
    return problems


def _version_problems(catalog: Catalog, event_type: str, last: int, last_schema: JsonDict) -> list[str]:
    model = catalog.events[event_type]
    name, version = model.__name__, model.VERSION
    released_file = f"schemas/{event_path(event_type, last)}"
    if version < last:
        return [
            f"{event_type}: {name}.VERSION is {version} but v{last} is released ({released_file}); "
            "versions only go up"
        ]
    if version == last:
        current = payload_schema(model, catalog.examples[event_type])
        return [
            f"{event_type} v{last}: {change} — this breaks consumers of the released {released_file}. Make "
            f"the change compatible, or bump {name}.VERSION to {last + 1} and register an upcaster from "
            f"v{last} (UPCASTERS = {{{last}: upcast_v{last}_v{last + 1}}})"
            for change in breaking_changes(last_schema, current)
        ]
    missing = [v for v in range(last, version) if v not in model.UPCASTERS]
    if missing:
        return [
            f"{event_type}: {name} is v{version} but has no upcaster from "
            f"v{', v'.join(map(str, missing))}, so the released v{last} records on the topic would not "
            f"decode: register one in {name}.UPCASTERS"
        ]
    return _upcast_problems(event_type, model, last, last_schema)


def _upcast_problems(event_type: str, model: type[Event], last: int, last_schema: JsonDict) -> list[str]:
    """Whether the upcasters turn the released version's example into a valid current event."""
    examples = last_schema.get("examples")
    if not isinstance(examples, list) or not examples or not isinstance(examples[0], dict):
        return []  # a released schema without an example (written by hand): nothing to try
    payload = dict(examples[0])
    try:
        for version in range(last, model.VERSION):
            payload = model.UPCASTERS[version](payload)
        model.model_validate(payload)
    except (ValidationError, KeyError, TypeError, ValueError) as error:
        return [
            f"{event_type}: the upcasters from v{last} do not turn the released v{last} example into a valid "
            f"v{model.VERSION} event: {type(error).__name__}: {error}"
        ]
    return []


def _same(path: PurePosixPath, committed: str, generated: str) -> bool:
    """Equal as documents: formatting alone (indentation, key order of YAML flow) is not staleness."""
    parse = yaml.safe_load if path.suffix == ".yaml" else json.loads
    try:
        return bool(parse(committed) == parse(generated))
    except (ValueError, yaml.YAMLError):
        return False


def stale_problems(files: Mapping[PurePosixPath, str], schema_dir: Path) -> list[str]:
    problems = []
    for path, text in sorted(files.items()):
        target = schema_dir / path
        if not target.exists():
            problems.append(f"{target} is missing: {REGENERATE}")
        elif not _same(path, target.read_text(encoding="utf-8"), text):
            problems.append(f"{target} is out of date: {REGENERATE}")
    return problems


def check(catalog: Catalog, schema_dir: Path) -> list[str]:
    """What fails the check: a change that would break a consumer of the released schemas, and an
    event type or version that was never published (its schema file is missing)."""
    released = read_released(schema_dir)
    problems = compatibility_problems(catalog, released)
    if problems:
        return problems
    return [
        f"{schema_dir / path} is missing: {REGENERATE}"
        for path in sorted(generated_files(catalog, released))
        if not (schema_dir / path).exists()
    ]


def stale(catalog: Catalog, schema_dir: Path, docs_file: Path | None) -> list[str]:
    """Committed files that a compatible change left behind. Not a failure: an optional field added
    to a model passes the check, and `make schemas` publishes it in the catalog."""
    released = read_released(schema_dir)
    problems = stale_problems(generated_files(catalog, released), schema_dir)
    if docs_file is not None:
        committed = docs_file.read_text(encoding="utf-8") if docs_file.exists() else ""
        section = docs.render(catalog, current_schemas(catalog), released)
        if docs.section_of(committed) != section:
            problems.append(f"{docs_file}'s generated catalog is out of date: {REGENERATE}")
    return problems


def generate(catalog: Catalog, schema_dir: Path, docs_file: Path | None) -> list[Path]:
    """Write the catalog (only files that changed); refuses when a change breaks a released schema."""
    released = read_released(schema_dir)
    problems = compatibility_problems(catalog, released)
    if problems:
        raise CatalogError(problems)
    written: list[Path] = []
    for path, text in sorted(generated_files(catalog, released).items()):
        target = schema_dir / path
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    if docs_file is not None:
        document = docs_file.read_text(encoding="utf-8")
        updated = docs.replace_section(document, docs.render(catalog, current_schemas(catalog), released))
        if updated != document:
            docs_file.write_text(updated, encoding="utf-8")
            written.append(docs_file)
    return written

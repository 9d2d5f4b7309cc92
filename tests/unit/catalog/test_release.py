"""The compatibility check against released schemas, with made-up events in a scratch schemas/ tree."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from shared.contracts import Event, OrderEvent
from shared.contracts.base import JsonDict
from shopctl.catalog import docs
from shopctl.catalog.release import check, generate, stale
from shopctl.catalog.schemas import Catalog, CatalogError

pytestmark = pytest.mark.unit

TOPIC = "shipping.events"
TYPE = "shipping.shipped"


class Carrier(StrEnum):
    SF = "sf"
    EMS = "ems"


class OnlySf(StrEnum):
    SF = "sf"


class Shipped(OrderEvent):
    """A parcel left the warehouse."""

    TOPIC = TOPIC
    TYPE = TYPE
    carrier: Carrier
    tracking_no: str
    note: str = ""


EXAMPLE = {"order_id": "o-1", "carrier": "sf", "tracking_no": "SF123", "note": "fragile"}


class Returned(OrderEvent):
    TOPIC = TOPIC
    TYPE = "shipping.returned"
    tracking_no: str


def catalog(*models: type[Event], **examples: JsonDict) -> Catalog:
    """A catalog of `models`, each with the example payload given for its class name (or EXAMPLE)."""
    made = [model.model_validate(examples.get(model.__name__, EXAMPLE)) for model in models]
    return Catalog.of(models, [TOPIC], made)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """An empty schemas/ directory and a docs page with the generated section's markers."""
    page = tmp_path / "events.md"
    page.write_text(f"# Events\n\nProse.\n\n{docs.BEGIN}\n{docs.END}\n\nMore prose.\n")
    return tmp_path / "schemas", page


def released(tree: tuple[Path, Path], *models: type[Event]) -> None:
    generate(catalog(*models), *tree)
    assert check(catalog(*models), tree[0]) == []


def test_generation_writes_a_schema_per_type_and_version_the_envelope_and_the_asyncapi_document(
    tree: tuple[Path, Path],
) -> None:
    schema_dir, page = tree
    released(tree, Shipped)

    shipped = json.loads((schema_dir / "events" / TYPE / "v1.json").read_text())
    assert shipped["properties"]["carrier"] == {"$ref": "#/$defs/Carrier"}
    assert shipped["examples"] == [EXAMPLE]
    assert (schema_dir / "envelope.json").exists() and (schema_dir / "asyncapi.yaml").exists()
    text = page.read_text()
    assert text.startswith("# Events\n\nProse.") and text.endswith("More prose.\n")
    assert "`shipping.shipped` (v1)" in text and "A parcel left the warehouse." in text


def test_a_removed_field_fails_naming_the_event_the_version_and_the_field(tree: tuple[Path, Path]) -> None:
    released(tree, Shipped)

    class ShippedWithoutNote(OrderEvent):
        TOPIC = TOPIC
        TYPE = TYPE
        carrier: Carrier
        tracking_no: str

    [problem] = check(catalog(ShippedWithoutNote), tree[0])

    assert problem.startswith("shipping.shipped v1: field `note` removed")
    assert "bump ShippedWithoutNote.VERSION to 2 and register an upcaster from v1" in problem


@pytest.mark.parametrize(
    ("field", "annotation", "value", "expected"),
    [
        ("tracking_no", int, 7, "field `tracking_no` retyped from string to integer"),
        ("signed_by", str, "Li", "field `signed_by` added as a required field without a default"),
        ("carrier", OnlySf, "sf", "field `carrier` narrowed: its enum lost ['ems']"),
    ],
)
def test_each_breaking_change_fails_the_check(
    tree: tuple[Path, Path], field: str, annotation: type, value: object, expected: str
) -> None:
    released(tree, Shipped)
    changed: type[Event] = type(
        "Shipped", (Shipped,), {"__annotations__": {field: annotation}, "__module__": __name__}
    )

    problems = check(catalog(changed, Shipped={**EXAMPLE, field: value}), tree[0])

    assert problems and problems[0].startswith(f"shipping.shipped v1: {expected}")


def test_generation_refuses_to_overwrite_a_released_schema_with_a_breaking_change(
    tree: tuple[Path, Path],
) -> None:
    schema_dir, _ = tree
    released(tree, Shipped)
    before = (schema_dir / "events" / TYPE / "v1.json").read_text()

    class ShippedWithoutNote(OrderEvent):
        TOPIC = TOPIC
        TYPE = TYPE
        carrier: Carrier
        tracking_no: str

    with pytest.raises(CatalogError, match="field `note` removed"):
        generate(catalog(ShippedWithoutNote), *tree)
    assert (schema_dir / "events" / TYPE / "v1.json").read_text() == before


def test_an_optional_field_passes_and_is_noted_as_stale_until_regenerated(tree: tuple[Path, Path]) -> None:
    released(tree, Shipped)

    class ShippedWithWeight(Shipped):
        weight_g: int | None = Field(default=None, ge=0)

    assert check(catalog(ShippedWithWeight), tree[0]) == []
    notices = stale(catalog(ShippedWithWeight), *tree)
    assert notices, "a compatible change not regenerated is noted"
    assert all("run `make schemas`" in notice for notice in notices)
    assert any("events/shipping.shipped/v1.json is out of date" in notice for notice in notices)
    generate(catalog(ShippedWithWeight), *tree)
    assert stale(catalog(ShippedWithWeight), *tree) == []


def upcast_v1_v2(payload: JsonDict) -> JsonDict:
    return {**payload, "tracking": {"carrier": payload["carrier"], "number": payload.pop("tracking_no")}}


def shipped_v2(upcaster: Callable[[JsonDict], JsonDict] | None) -> type[Event]:
    """Shipped with its tracking number moved into an object: a breaking change, as version 2."""

    class Tracking(BaseModel):
        carrier: Carrier
        number: str

    class ShippedV2(OrderEvent):
        TOPIC = TOPIC
        TYPE = TYPE
        VERSION = 2
        UPCASTERS = {1: upcaster} if upcaster else {}
        tracking: Tracking
        note: str = ""

    return ShippedV2


V2_EXAMPLE = {"order_id": "o-1", "tracking": {"carrier": "sf", "number": "SF123"}, "note": ""}


def test_a_breaking_change_passes_with_a_version_bump_and_an_upcaster_and_the_old_file_stays(
    tree: tuple[Path, Path],
) -> None:
    schema_dir, page = tree
    released(tree, Shipped)
    v1 = (schema_dir / "events" / TYPE / "v1.json").read_text()
    model = shipped_v2(upcast_v1_v2)

    regenerate = "run `make schemas` and commit schemas/ and docs/events.md"
    assert check(catalog(model, ShippedV2=V2_EXAMPLE), tree[0]) == [
        f"{schema_dir}/events/shipping.shipped/v2.json is missing: {regenerate}"
    ], "a new version must be published"
    assert stale(catalog(model, ShippedV2=V2_EXAMPLE), *tree) == [
        f"{schema_dir}/asyncapi.yaml is out of date: {regenerate}",
        f"{schema_dir}/events/shipping.shipped/v2.json is missing: {regenerate}",
        f"{page}'s generated catalog is out of date: {regenerate}",
    ]
    generate(catalog(model, ShippedV2=V2_EXAMPLE), *tree)

    assert check(catalog(model, ShippedV2=V2_EXAMPLE), tree[0]) == []
    assert stale(catalog(model, ShippedV2=V2_EXAMPLE), *tree) == []
    assert (schema_dir / "events" / TYPE / "v1.json").read_text() == v1, "the released v1 stays as it was"
    assert "tracking" in json.loads((schema_dir / "events" / TYPE / "v2.json").read_text())["properties"]
    asyncapi = (schema_dir / "asyncapi.yaml").read_text()
    assert "shipping.shipped.v1:" in asyncapi and "shipping.shipped.v2:" in asyncapi
    assert "Superseded versions" in page.read_text()


def test_a_version_bump_without_an_upcaster_fails(tree: tuple[Path, Path]) -> None:
    released(tree, Shipped)

    [problem] = check(catalog(shipped_v2(None), ShippedV2=V2_EXAMPLE), tree[0])

    assert problem.startswith("shipping.shipped: ShippedV2 is v2 but has no upcaster from v1")


def test_an_upcaster_that_does_not_turn_the_released_example_into_a_valid_event_fails(
    tree: tuple[Path, Path],
) -> None:
    released(tree, Shipped)

    def forgets_the_tracking(payload: JsonDict) -> JsonDict:
        return payload

    [problem] = check(catalog(shipped_v2(forgets_the_tracking), ShippedV2=V2_EXAMPLE), tree[0])

    assert problem.startswith("shipping.shipped: the upcasters from v1 do not turn the released v1 example")
    assert "tracking" in problem


def test_a_version_may_not_go_down(tree: tuple[Path, Path]) -> None:
    model = shipped_v2(upcast_v1_v2)
    released(tree, Shipped)
    generate(catalog(model, ShippedV2=V2_EXAMPLE), *tree)

    [problem] = check(catalog(Shipped), tree[0])

    assert "Shipped.VERSION is 1 but v2 is released" in problem


def test_a_type_that_disappears_fails_and_a_new_type_fails_until_generated(tree: tuple[Path, Path]) -> None:
    released(tree, Shipped, Returned)

    [gone] = check(catalog(Shipped), tree[0])
    assert gone.startswith("shipping.returned: released (schemas/events/shipping.returned/) but no model")

    other = tree[0].parent / "other"
    generate(catalog(Shipped), other, None)
    new_type = check(catalog(Shipped, Returned), other)
    assert f"{other}/events/shipping.returned/v1.json is missing: run `make schemas`" in "\n".join(new_type)
    assert not any("break" in problem for problem in new_type)


def test_a_breaking_change_to_the_envelope_fails(tree: tuple[Path, Path]) -> None:
    schema_dir, _ = tree
    released(tree, Shipped)
    envelope_file = schema_dir / "envelope.json"
    envelope = json.loads(envelope_file.read_text())
    envelope["properties"]["tenant"] = {"type": "string"}
    envelope_file.write_text(json.dumps(envelope))

    [problem] = check(catalog(Shipped), tree[0])

    assert problem.startswith("the envelope: field `tenant` removed")


def test_every_type_needs_an_example() -> None:
    with pytest.raises(CatalogError, match=r"shipping.returned has no example: give Returned one"):
        Catalog.of([Shipped, Returned], [TOPIC], [Shipped.model_validate(EXAMPLE)])


def test_a_model_example_is_used_when_it_has_one() -> None:
    class Delivered(OrderEvent):
        model_config = {"json_schema_extra": {"examples": [{"order_id": "o-9", "signed_by": "Li"}]}}
        TOPIC = TOPIC
        TYPE = "shipping.delivered"
        signed_by: str

    assert Catalog.of([Delivered], [TOPIC]).examples["shipping.delivered"] == Delivered(
        order_id="o-9", signed_by="Li"
    )


def test_the_key_field_must_be_recognisable_in_the_example() -> None:
    with pytest.raises(CatalogError, match="exactly one field"):
        catalog(Shipped, Shipped={**EXAMPLE, "tracking_no": "o-1"}).key_field(TYPE)


def test_a_docs_page_without_its_markers_is_refused(tree: tuple[Path, Path]) -> None:
    schema_dir, page = tree
    page.write_text("# Events\n")

    with pytest.raises(CatalogError, match="lost its markers"):
        generate(catalog(Shipped), schema_dir, page)

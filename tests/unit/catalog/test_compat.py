"""Which model changes break a consumer of the released payload schema, rule by rule."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from shopctl.catalog.compat import Break, breaking_changes

pytestmark = pytest.mark.unit


class Carrier(StrEnum):
    SF = "sf"
    EMS = "ems"


class FewerCarriers(StrEnum):
    SF = "sf"


class MoreCarriers(StrEnum):
    SF = "sf"
    EMS = "ems"
    JD = "jd"


class Parcel(BaseModel):
    sku: str
    quantity: int = Field(gt=0)


class ParcelWithWeight(BaseModel):
    sku: str
    quantity: int = Field(gt=0)
    weight_g: int


class ParcelWithoutQuantity(BaseModel):
    sku: str


class Shipped(BaseModel):
    order_id: str
    carrier: Carrier
    parcels: list[Parcel]
    tracking_no: str | None = None
    note: str = ""
    weight_g: int = Field(ge=0, le=50_000)


def changes(new: type[BaseModel], old: type[BaseModel] = Shipped) -> list[Break]:
    return breaking_changes(old.model_json_schema(), new.model_json_schema())


def test_the_same_model_breaks_nothing() -> None:
    assert changes(Shipped) == []


def test_adding_an_optional_field_breaks_nothing() -> None:
    class WithOptional(Shipped):
        signed_by: str | None = None
        boxes: int = 1

    assert changes(WithOptional) == []


def test_a_removed_field_breaks_and_is_named() -> None:
    class WithoutNote(BaseModel):
        order_id: str
        carrier: Carrier
        parcels: list[Parcel]
        tracking_no: str | None = None
        weight_g: int = Field(ge=0, le=50_000)

    assert changes(WithoutNote) == [Break("note", "removed")]
    assert str(changes(WithoutNote)[0]) == "field `note` removed"


def test_a_retyped_field_breaks() -> None:
    class WeightAsText(Shipped):
        weight_g: str  # type: ignore[assignment]

    [change] = changes(WeightAsText)
    assert change.field == "weight_g" and change.problem == "retyped from integer to string"


def test_a_field_that_may_now_be_null_is_retyped_and_so_is_one_that_no_longer_may() -> None:
    class NullableWeight(Shipped):
        weight_g: int | None = Field(ge=0, le=50_000)  # type: ignore[assignment]

    class RequiredTracking(Shipped):
        tracking_no: str = ""

    assert [c.field for c in changes(NullableWeight)] == ["weight_g"]
    assert "retyped from integer to integer | null" in changes(NullableWeight)[0].problem
    assert [(c.field, c.problem) for c in changes(RequiredTracking)] == [
        ("tracking_no", "retyped from null | string to string")
    ]


def test_a_new_required_field_without_a_default_breaks() -> None:
    class WithSignature(Shipped):
        signed_by: str

    assert changes(WithSignature) == [Break("signed_by", "added as a required field without a default")]


def test_an_optional_field_that_loses_its_default_breaks() -> None:
    class NoteRequired(Shipped):
        note: str

    [change] = changes(NoteRequired)
    assert change.field == "note" and change.problem.startswith("became required")


def test_an_enum_that_loses_a_value_breaks_and_one_that_gains_a_value_does_not() -> None:
    class Narrowed(Shipped):
        carrier: FewerCarriers  # type: ignore[assignment]

    class Widened(Shipped):
        carrier: MoreCarriers  # type: ignore[assignment]

    assert changes(Narrowed) == [Break("carrier", "narrowed: its enum lost ['ems']")]
    assert changes(Widened) == []


def test_a_free_string_narrowed_to_an_enum_or_a_literal_breaks() -> None:
    class Free(Shipped):
        carrier: str  # type: ignore[assignment]

    class OnlySf(Shipped):
        carrier: Literal["sf"]  # type: ignore[assignment]

    assert [c.field for c in changes(OnlySf, old=Free)] == ["carrier"]
    assert changes(Free, old=OnlySf) == []


def test_changes_inside_nested_models_name_the_path() -> None:
    class NewParcelField(Shipped):
        parcels: list[ParcelWithWeight]  # type: ignore[assignment]

    class LostParcelField(Shipped):
        parcels: list[ParcelWithoutQuantity]  # type: ignore[assignment]

    assert changes(NewParcelField) == [
        Break("parcels[].weight_g", "added as a required field without a default")
    ]
    assert changes(LostParcelField) == [Break("parcels[].quantity", "removed")]


def test_a_tighter_range_or_length_breaks_and_a_looser_one_does_not() -> None:
    class Lighter(Shipped):
        weight_g: int = Field(ge=0, le=30_000)

    class Heavier(Shipped):
        weight_g: int = Field(ge=0, le=80_000)

    class Positive(Shipped):
        weight_g: int = Field(gt=0, le=50_000)

    class ShortNote(Shipped):
        note: str = Field(default="", max_length=20)

    assert [c.problem for c in changes(Lighter)] == ["narrowed: its maximum fell from 50000 to 30000"]
    assert changes(Heavier) == []
    assert [c.problem for c in changes(Positive)] == ["narrowed: its minimum rose from 0 to 0 (exclusive)"]
    assert [c.problem for c in changes(ShortNote)] == ["narrowed: maxLength fell from none to 20"]


def test_documentation_and_defaults_may_change() -> None:
    class Documented(BaseModel):
        """A parcel left the warehouse."""

        order_id: str = Field(description="The order.")
        carrier: Carrier = Field(title="Who carries it")
        parcels: list[Parcel]
        tracking_no: str | None = None
        note: str = "no note"
        weight_g: int = Field(ge=0, le=50_000, examples=[1200])

    assert changes(Documented) == []


def test_a_union_of_enums_compares_as_the_values_it_allows() -> None:
    class EitherReason(Shipped):
        reason: Carrier | MoreCarriers

    class OneReason(Shipped):
        reason: Carrier

    assert changes(OneReason, old=EitherReason) == [Break("reason", "narrowed: its enum lost ['jd']")]
    assert changes(EitherReason, old=OneReason) == []

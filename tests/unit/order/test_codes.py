"""A paid order's codes as the order keeps them: sealed, once per line, with a timeline entry."""

from __future__ import annotations

import pytest

from shared.contracts import AssignedCodes
from tests.unit.order.test_domain import approved_and_reserved
from tests.unit.samples import T0

pytestmark = pytest.mark.unit


def test_codes_are_kept_once_per_line_and_leave_the_status_as_it_was() -> None:
    order = approved_and_reserved()
    status, steps = order.status, len(order.timeline)
    gift = AssignedCodes(sku="GIFT", sealed_codes=["v1.k.sealed-1", "v1.k.sealed-2"])
    topup = AssignedCodes(sku="TOPUP", sealed_codes=["v1.k.sealed-3"])

    assert order.codes_assigned(T0, [gift]) == []
    assert order.codes_assigned(T0, [gift, topup]) == []
    assert order.codes_assigned(T0, [gift, topup]) == []

    assert order.codes == [gift, topup]
    assert order.delivered_codes == 3
    assert order.status is status
    assert [entry.cause for entry in order.timeline[steps:]] == ["inventory.codes_assigned"] * 2
    assert "sealed" not in " ".join(entry.note + entry.detail for entry in order.timeline)

"""What analysts may see of an event: everything but personal data and credentials. One rule, used
by the gateway's live stream and by `shopctl events`."""

from __future__ import annotations

from shared.contracts.base import Envelope

# Where an order goes is analytics; who receives it, their phone and their street are not.
REGION_FIELDS = ("province", "city", "district")
# Payment credentials never leave the payment path.
SECRET_FIELDS = frozenset({"token", "sealed_token"})


def for_analysts(envelope: Envelope) -> Envelope:
    """The envelope with a shipping address cut to its region and no payment token."""
    data = {key: value for key, value in envelope.data.items() if key not in SECRET_FIELDS}
    address = data.get("shipping_address")
    if isinstance(address, dict):
        data["shipping_address"] = {key: address[key] for key in REGION_FIELDS if key in address}
    return envelope.model_copy(update={"data": data})

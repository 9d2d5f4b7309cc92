"""The event catalog: JSON Schemas and an AsyncAPI document generated from shared/contracts, and the
check that a model change does not break consumers of the released schemas.

    python -m shopctl.catalog generate   # `make schemas`: write schemas/ and docs/events.md's catalog
    python -m shopctl.catalog check      # `make schemas-check`: breaking or stale? (part of `make test`)
"""

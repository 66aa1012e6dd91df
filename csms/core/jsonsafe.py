"""Moved to `evfleet.jsonsafe`; re-exported here so old imports keep working until they switch."""

from evfleet.jsonsafe import (  # noqa: F401
    MAX_JSON_DEPTH,
    TOO_DEEP,
    depth_exceeds,
    has_lone_surrogate,
    load_stored,
    loads_finite,
)

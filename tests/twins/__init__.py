"""In-memory twins of the services' stores, for unit tests; the store contract suite keeps them honest."""

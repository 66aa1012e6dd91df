"""State store: Redis keys, streams and the embedded Redis server."""

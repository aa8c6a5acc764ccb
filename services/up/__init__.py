"""``classpulse up``: ingest, inference, aggregation and gateway in one process on memory transports."""

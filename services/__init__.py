"""ClassPulse services: ingest, inference, aggregator, gateway (plus replay and the CLI)."""

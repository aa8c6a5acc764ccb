"""ClassPulse ingest service."""

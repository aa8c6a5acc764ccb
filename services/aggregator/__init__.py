"""ClassPulse aggregator service."""

"""ClassPulse inference service."""

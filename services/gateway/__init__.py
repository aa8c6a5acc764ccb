"""ClassPulse gateway service."""

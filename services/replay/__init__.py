"""Replay: recorded sessions (files or a Kafka event log) to a per-second report."""

"""Exports of one session's results as flat tables (timeline, students, events) in CSV, JSON Lines or Parquet."""

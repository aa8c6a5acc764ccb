"""The transcribe stage: each participant's speaking segments -> faster-whisper -> ``source: speech`` events."""

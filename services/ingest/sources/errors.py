"""Errors a media source reports to users."""

from __future__ import annotations


class MediaSourceError(Exception):
    """The input cannot be used; the message is one user-facing line (what is wrong, what to do)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

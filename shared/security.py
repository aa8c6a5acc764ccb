"""Start-up checks of the token secret: a service reachable beyond loopback needs its own.

A server bound to a non-loopback address with the development secret (public in this repository),
an empty one, or one shorter than :data:`shared.tokens.MIN_SECRET_CHARS` refuses to start with one
line saying how to set it; on loopback the development secret only earns a warning line.
"""

from __future__ import annotations

import ipaddress

from shared.settings import DEV_TOKEN_SECRET, CommonSettings
from shared.tokens import MIN_SECRET_CHARS

HOW_TO_SET = "set CLASSPULSE_TOKEN_SECRET to a random secret of at least 32 characters (e.g. `openssl rand -hex 32`)"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``0.0.0.0``/``::`` and names do not)."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def secret_weakness(common: CommonSettings) -> str | None:
    """What is wrong with the token secrets (None: nothing), without ever showing them."""
    for name, value in (
        ("CLASSPULSE_TOKEN_SECRET", common.token_secret.get_secret_value()),
        ("CLASSPULSE_TOKEN_SECRET_PREVIOUS", common.token_secret_previous.get_secret_value()),
    ):
        if name.endswith("PREVIOUS") and not value:
            continue
        if not value:
            return f"{name} is empty"
        if value == DEV_TOKEN_SECRET:
            return f"{name} is the development secret (public in the ClassPulse repository)"
        if len(value) < MIN_SECRET_CHARS:
            return f"{name} is shorter than {MIN_SECRET_CHARS} characters"
    return None


def check_token_secret(common: CommonSettings, *, host: str, service: str) -> str | None:
    """Raise ``ValueError`` (the one refusal line) when ``service`` on ``host`` would run with a weak
    secret beyond loopback; return a warning line for the same on loopback; None when all is well."""
    weakness = secret_weakness(common)
    if weakness is None:
        return None
    if not is_loopback(host):
        raise ValueError(f"{service} refuses to listen on {host}: {weakness}; anyone could sign tokens. {HOW_TO_SET}")
    return f"warning: {weakness}; fine on loopback ({host}) for development only. Before serving others, {HOW_TO_SET}"

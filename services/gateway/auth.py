"""Bearer-token checks for every gateway route (header or ``?token=`` for browser feeds)."""

from __future__ import annotations

from aiohttp import web

from shared.tokens import Claims, Secret, TokenError, bearer, verify_token

TOKEN_QUERY = "token"


def request_token(request: web.Request) -> str:
    """The bearer token of a request: ``Authorization: Bearer`` or ``?token=`` (WebSocket/SSE in browsers)."""
    header = request.headers.get("Authorization")
    if header is None and request.query.get(TOKEN_QUERY):
        return request.query[TOKEN_QUERY]
    return bearer(header)


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def viewer_claims(request: web.Request, *, secret: Secret, session: str | None) -> Claims:
    """Claims of a teacher/viewer token for ``session`` (any session when None); raises TokenError."""
    claims = verify_token(request_token(request), secret=secret)
    if claims.role not in ("teacher", "viewer"):
        raise TokenError(f"a {claims.role} token may only publish; ask for a viewer or teacher token", status=403)
    if session is not None and not claims.can_view(session):
        raise TokenError("this token is scoped to another session", status=403)
    return claims


DEPLOYMENT_SESSION = "*"
"""The session of a deployment-wide platform token (``classpulse token --session '*' --role platform``)."""


def reader_claims(request: web.Request, *, secret: Secret, session: str) -> Claims:
    """Claims of a token that may read ``session``'s results: teacher, viewer, or the platform's backend (a
    platform token of the session or of the deployment); raises TokenError."""
    claims = verify_token(request_token(request), secret=secret)
    if claims.role == "platform" and claims.session in (session, DEPLOYMENT_SESSION):
        return claims
    return viewer_claims(request, secret=secret, session=session)


def manager_claims(request: web.Request, *, secret: Secret, session: str | None) -> Claims:
    """Claims of a token that may manage ``session`` (end it, register its webhooks): its teacher or platform
    token, or a deployment platform token; ``session`` None (deployment-wide webhooks): only a deployment
    platform token. Raises TokenError."""
    claims = verify_token(bearer(request.headers.get("Authorization")), secret=secret)
    if claims.role == "platform" and claims.session == DEPLOYMENT_SESSION:
        return claims
    if session is None:
        raise TokenError(
            "deployment-wide webhooks need a deployment platform token: classpulse token --session '*' --role platform",
            status=403,
        )
    if claims.role not in ("teacher", "platform"):
        raise TokenError(
            f"a {claims.role} token cannot manage the session; use a teacher or platform token", status=403
        )
    if claims.session != session:
        raise TokenError("this token is scoped to another session", status=403)
    return claims

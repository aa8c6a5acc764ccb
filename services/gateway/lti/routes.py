"""``/lti/login`` and ``/lti/launch`` on the gateway app (documented in its OpenAPI document)."""

from __future__ import annotations

from aiohttp import web

from services.gateway.lti.platforms import LtiConfigError, load_registry
from services.gateway.lti.settings import LtiSettings
from services.gateway.lti.tool import LtiTool
from shared.openapi import RouteDoc, add_documented_route
from shared.service import ServiceError
from shared.tokens import Secret

LTI_TOOL: web.AppKey[LtiTool] = web.AppKey("classpulse_lti_tool", LtiTool)
_ERRORS = (("400", "Not a launch from a registered platform, or the login expired (one line)"),
           ("404", "LTI is not configured (CLASSPULSE_LTI_PLATFORMS_FILE)"))
LOGIN_DOC = "OIDC login initiation from an LTI 1.3 platform (redirects to the platform)"
LAUNCH_DOC = "LTI 1.3 launch (id_token form post): redirects instructors to the dashboard, learners to the join page"


def build_tool(settings: LtiSettings, *, token_secret: Secret) -> LtiTool:
    """The tool with its registry loaded; a bad platforms file stops the service with one line."""
    try:
        registry = load_registry(settings.platforms_file) if settings.platforms_file else None
    except LtiConfigError as exc:
        raise ServiceError(str(exc), code=2) from None
    return LtiTool(settings=settings, registry=registry, token_secret=token_secret)


def add_lti_routes(app: web.Application, tool: LtiTool) -> None:
    app[LTI_TOOL] = tool
    for method in ("GET", "POST"):
        add_documented_route(app, RouteDoc(method, "/lti/login", LOGIN_DOC, status="302", description="Found",
                                           errors=_ERRORS), tool.login)
    add_documented_route(app, RouteDoc("POST", "/lti/launch", LAUNCH_DOC, status="303", description="See Other",
                                       request="application/x-www-form-urlencoded",
                                       errors=(*_ERRORS, ("401", "id_token invalid, expired or replayed"),
                                               ("403", "Deployment not registered, or an unmapped role"))),
                         tool.launch)

"""What ClassPulse reads from an LTI 1.3 ``id_token``: message checks, role mapping, ids.

Only what a launch needs is read: the deployment, message type and version, the roles, the
course (context) and placement (resource link) ids and ``sub``. Names, e-mail addresses and
pictures the platform may send are ignored and never stored: a participant id is a pseudonym
derived from the issuer and ``sub``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from services.gateway.lti.platforms import LtiPlatform

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
DEPLOYMENT_ID = CLAIM + "deployment_id"
MESSAGE_TYPE = CLAIM + "message_type"
VERSION = CLAIM + "version"
ROLES = CLAIM + "roles"
CONTEXT = CLAIM + "context"
RESOURCE_LINK = CLAIM + "resource_link"
RESOURCE_LINK_REQUEST = "LtiResourceLinkRequest"
LTI_VERSION = "1.3.0"

_MEMBERSHIP = "http://purl.imsglobal.org/vocab/lis/v2/membership"
_INSTITUTION = "http://purl.imsglobal.org/vocab/lis/v2/institution/person"
TEACHING_ROLES = frozenset({"Instructor", "Administrator", "ContentDeveloper", "Mentor", "TeachingAssistant"})
LEARNING_ROLES = frozenset({"Learner", "Student"})
INSTITUTION_TEACHING = frozenset({"Instructor", "Faculty", "Administrator"})

LaunchRole = Literal["teacher", "student"]


class LaunchRejected(Exception):
    """The launch cannot be accepted; ``status`` is the HTTP code, the message one line for the user."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LaunchIdentity:
    """Who is launching, in ClassPulse's terms."""

    session: str
    participant: str
    role: LaunchRole


def _role_names(roles: list[str], vocabulary: str) -> set[str]:
    """Role names of one vocabulary: ``.../membership#Instructor`` and ``.../membership/Instructor#TeachingAssistant``
    both count, as do LTI 1.1 short names (``Instructor``) in the context vocabulary."""
    names: set[str] = set()
    for role in roles:
        if role.startswith(vocabulary + "#"):
            names.add(role.rpartition("#")[2])
        elif role.startswith(vocabulary + "/"):
            names.add(role.rpartition("#")[2] or role[len(vocabulary) + 1 :])
        elif vocabulary == _MEMBERSHIP and "/" not in role and "#" not in role:
            names.add(role)
    return names


def map_role(roles: list[str]) -> LaunchRole | None:
    """teacher or student from LTI roles: course (membership) roles first, then institution roles."""
    course = _role_names(roles, _MEMBERSHIP)
    if course & TEACHING_ROLES:
        return "teacher"
    if course & LEARNING_ROLES:
        return "student"
    institution = _role_names(roles, _INSTITUTION)
    if institution & INSTITUTION_TEACHING:
        return "teacher"
    if institution & LEARNING_ROLES:
        return "student"
    return None


def _pseudonym(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _object_id(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if isinstance(value, Mapping) and isinstance(value.get("id"), str) and value["id"]:
        return str(value["id"])
    return None


def identity(platform: LtiPlatform, claims: Mapping[str, Any]) -> LaunchIdentity:
    """Check an already signature-verified ``id_token``'s LTI claims and map them to a ClassPulse identity."""
    deployment = claims.get(DEPLOYMENT_ID)
    if deployment not in platform.deployment_ids:
        raise LaunchRejected(
            f"deployment {str(deployment)[:100]!r} is not registered for {platform.issuer}; add it to deployment_ids "
            "in the LTI platforms file", status=403,
        )
    if claims.get(MESSAGE_TYPE) != RESOURCE_LINK_REQUEST:
        raise LaunchRejected(f"ClassPulse accepts only {RESOURCE_LINK_REQUEST} launches; add it as a link, not as "
                             "deep-linking content", status=400)
    if claims.get(VERSION) != LTI_VERSION:
        raise LaunchRejected(f"the launch says LTI version {str(claims.get(VERSION))[:20]!r}; ClassPulse speaks "
                             f"{LTI_VERSION}", status=400)
    link = _object_id(claims, RESOURCE_LINK)
    if link is None:
        raise LaunchRejected("the launch has no resource link id; the LMS must send "
                             "https://purl.imsglobal.org/spec/lti/claim/resource_link", status=400)
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise LaunchRejected("the launch is anonymous (no sub); ClassPulse needs a user to scope the token",
                             status=400)
    roles = claims.get(ROLES)
    role = map_role([r for r in roles if isinstance(r, str)] if isinstance(roles, list) else [])
    if role is None:
        raise LaunchRejected("your role in this course is neither instructor nor learner; ClassPulse opens the "
                             "dashboard for instructors and the join page for learners", status=403)
    context = _object_id(claims, CONTEXT)
    session = platform.sessions.get(link) or (platform.sessions.get(context) if context else None)
    if session is None:
        session = _pseudonym("lti-", platform.issuer, str(deployment), context or "", "" if context else link)
    return LaunchIdentity(session=session, participant=_pseudonym("u-", platform.issuer, sub), role=role)

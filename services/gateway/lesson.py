"""``PUT /api/sessions/{session}/topic``: the lesson topic that on-topic relevance compares with.

Set it when the session starts (a sentence or a few keywords, e.g. "adding fractions with unlike
denominators"); together with the teacher's recent messages and transcripts it is the lesson
context of the gateway's text stage (:class:`shared.text.stage.TextStage`). Teacher or platform
token. The topic is held in memory by the gateway that received it and never logged.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.gateway.context import GATEWAY
from services.gateway.models import ErrorBody
from services.gateway.openapi import SESSION_PARAM
from shared.contracts.interactions import MAX_TEXT_CHARS
from shared.log import get_logger, pii
from shared.openapi import RouteDoc
from shared.text.stage import TopicError
from shared.tokens import TokenError, bearer, verify_token

_log = get_logger(__name__)
PATH = "/api/sessions/{session}/topic"
MAX_BODY = 4 * MAX_TEXT_CHARS + 1024


class LessonTopic(BaseModel):
    """The lesson topic of a session."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="A sentence or a few keywords.")


class LessonTopicReceipt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session: str
    relevance: bool = Field(description="Whether relevance is judged (False: CLASSPULSE_TEXT_RELEVANCE=off).")


ROUTE = RouteDoc(
    "PUT",
    PATH,
    "Set the lesson topic (on-topic relevance compares messages with it and the teacher's recent speech/chat)",
    response=LessonTopicReceipt,
    status="200",
    description="The topic is set for this session",
    security=("bearer",),
    error_model=ErrorBody,
    errors=(
        ("400", "Not a JSON object with a non-empty 'topic'"),
        ("401", "Missing, malformed or expired token"),
        ("403", "Token of another session, or not a teacher or platform token"),
        ("413", "Body too large"),
    ),
    params=(SESSION_PARAM,),
    request_model=LessonTopic,
)


def _error(status: int, message: str) -> web.Response:
    return web.json_response(text=ErrorBody(error=message).model_dump_json(), status=status)


async def put_topic(request: web.Request) -> web.StreamResponse:
    ctx = request.app[GATEWAY]
    session = request.match_info["session"]
    try:
        claims = verify_token(bearer(request.headers.get("Authorization")), secret=ctx.token_secret)
    except TokenError as exc:
        return _error(exc.status, str(exc))
    if claims.session != session:
        return _error(403, "this token is scoped to another session")
    if claims.role not in ("teacher", "platform"):
        return _error(403, "only a teacher or platform token sets the lesson topic")
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        return _error(413, f"body is larger than {MAX_BODY} bytes; a topic is a sentence or a few keywords")
    try:
        topic = LessonTopic.model_validate(json.loads(body)).topic
    except (ValueError, ValidationError):
        return _error(400, 'send a JSON object {"topic": "..."} with a non-empty topic (a sentence or keywords)')
    try:
        await asyncio.to_thread(ctx.text.set_topic, session, topic)
    except TopicError as exc:
        return _error(400, str(exc))
    _log.info("lesson topic state %s -> %s", "unset", "set", extra=pii(session=session))
    receipt = LessonTopicReceipt(session=session, relevance=ctx.text.judges_relevance)
    return web.json_response(text=receipt.model_dump_json())

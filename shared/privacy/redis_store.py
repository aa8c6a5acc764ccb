"""Privacy policies and erasure on Redis (see :mod:`shared.privacy.store`).

Policy: the string ``classpulse:privacy:{session}`` (``SessionPrivacy`` JSON), expiring after the
retention. Erasure deletes the session's live state hash and summary, its publish-epoch counters
(``classpulse:publish:{session}/*``), its inference state snapshots
(``classpulse:inference:pstate:{session}/*``) and its entries still waiting in the media shard
streams (found by their header, acked for the inference group and deleted), and its speech segments still
waiting in ``classpulse:speech:0`` for a transcribe worker (counted with the media).
"""

from __future__ import annotations

import re
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from shared.contracts.privacy import ErasedItem, SessionPrivacy
from shared.contracts.speech import speech_subject
from shared.contracts.topics import (
    INFERENCE_COORDINATION,
    INFERENCE_GROUP,
    MEDIA_STREAM,
    PUBLISH_EPOCHS,
    SPEECH_STREAM,
    TRANSCRIBE_GROUP,
    media_stream,
    privacy_key,
    state_key,
    summary_key,
)
from shared.contracts.webhooks import WEBHOOK_KEYS
from shared.privacy.store import Change, belongs_to, is_participant_field
from shared.transport.shards import participant_key

_GLOB = re.compile(r"([*?\[\]\\])")


def _glob_literal(text: str) -> str:
    """``text`` with Redis glob characters escaped (a session id is data, not a pattern)."""
    return _GLOB.sub(r"\\\1", text)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisPrivacyStore:
    """:class:`~shared.privacy.store.PrivacyStore` on Redis."""

    def __init__(
        self, *, url: str, shards: int, retention_s: int, media_prefix: str = MEDIA_STREAM,
        speech_prefix: str = SPEECH_STREAM,
    ) -> None:
        self.url = url
        self.speech_prefix = speech_prefix
        self.shards = shards
        self.retention_s = retention_s
        self.media_prefix = media_prefix
        self._redis: aioredis.Redis | None = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisPrivacyStore used before start()")
        return self._redis

    async def start(self) -> None:
        # No I/O here (like the publish registry): a service that never looks at a policy never talks to Redis.
        self._redis = aioredis.Redis.from_url(self.url, decode_responses=False)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def get(self, session: str) -> SessionPrivacy | None:
        raw = await self.redis.get(privacy_key(session))
        return None if raw is None else SessionPrivacy.model_validate_json(raw)

    async def put(self, policy: SessionPrivacy) -> None:
        await self.redis.set(privacy_key(policy.session), policy.model_dump_json().encode(), ex=self.retention_s)

    async def update(self, session: str, change: Change) -> SessionPrivacy:
        key = privacy_key(session)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:  # optimistic: WATCH, read, MULTI/EXEC; again when another writer came between
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    policy = change(None if raw is None else SessionPrivacy.model_validate_json(raw))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, policy.model_dump_json().encode(), ex=self.retention_s)
                    await pipe.execute()
                    return policy
                except WatchError:
                    continue

    async def _delete_matching(self, pattern: str) -> int:
        keys = [key async for key in self.redis.scan_iter(match=pattern, count=500)]
        return int(await self.redis.delete(*keys)) if keys else 0

    async def _discard_media(self, session: str, participant: str | None) -> int:
        removed = 0
        for k in range(self.shards):
            name = media_stream(k, self.media_prefix)
            entries: Any = await self.redis.xrange(name)
            ids = [eid for eid, fields in entries if fields and belongs_to(fields.get(b"d", b""), session, participant)]
            if ids:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xack(name, INFERENCE_GROUP, *ids)
                    pipe.xdel(name, *ids)
                    pipe.hdel(f"{name}:results", *ids)
                    results = await pipe.execute()
                removed += int(results[1])
        return removed + await self._discard_speech(session, participant)

    async def _discard_speech(self, session: str, participant: str | None) -> int:
        """Speech segments (audio) of the session still waiting for a transcribe worker (counted as media)."""
        name = media_stream(0, self.speech_prefix)
        entries: Any = await self.redis.xrange(name)
        ids = []
        for eid, fields in entries:
            subject = speech_subject(fields.get(b"d", b"")) if fields else None
            if subject is not None and subject[0] == session and (participant is None or subject[1] == participant):
                ids.append(eid)
        if not ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(name, TRANSCRIBE_GROUP, *ids)
            pipe.xdel(name, *ids)
            results = await pipe.execute()
        return int(results[1])

    async def forget_participant(self, session: str, participant: str) -> list[ErasedItem]:
        key = state_key(session)
        fields = [f for f in (_text(f) for f in await self.redis.hkeys(key)) if is_participant_field(f, participant)]
        live = int(await self.redis.hdel(key, *fields)) if fields else 0
        media = await self._discard_media(session, participant)
        pstate = f"{INFERENCE_COORDINATION}:pstate:{participant_key(session, participant)}"
        snapshot = int(await self.redis.delete(pstate))
        await self.redis.delete(f"{pstate}:v")  # its version (shard/epoch/seq), no data of its own
        return [
            ErasedItem(store="redis", what="live state of the participant", count=live),
            ErasedItem(store="redis", what="media waiting for analysis", count=media),
            ErasedItem(store="redis", what="inference state snapshot", count=snapshot),
        ]

    async def erase(self, session: str) -> list[ErasedItem]:
        literal = _glob_literal(session)
        live = int(await self.redis.delete(state_key(session), summary_key(session)))
        epochs = await self._delete_matching(f"{PUBLISH_EPOCHS}:{literal}/*")
        await self._delete_matching(f"{INFERENCE_COORDINATION}:pstate:{literal}/*:v")  # versions, not counted
        snapshots = await self._delete_matching(f"{INFERENCE_COORDINATION}:pstate:{literal}/*")
        media = await self._discard_media(session, None)
        webhooks = await self._delete_matching(f"{WEBHOOK_KEYS}:session:{literal}:*")
        return [
            ErasedItem(store="redis", what="live state and session summary keys", count=live),
            ErasedItem(store="redis", what="publish epochs", count=epochs),
            ErasedItem(store="redis", what="inference state snapshots", count=snapshots),
            ErasedItem(store="redis", what="media waiting for analysis", count=media),
            ErasedItem(store="redis", what="webhook endpoints, pending deliveries and markers", count=webhooks),
        ]

"""Participant-affine media routing: which shard a participant's media goes to, which worker owns a shard.

* :func:`shard_of` maps ``"<session>/<participant>"`` to one of ``S`` shards with a keyed-free,
  stable hash (blake2b, not Python's salted ``hash``), so every process agrees on it; each
  shard is its own bounded media stream (:func:`shared.contracts.topics.media_stream`).
* :func:`assign` spreads the shards over the live inference workers by rendezvous (highest
  random weight) hashing with bounded load: every worker gets ``floor(S/N)`` or ``ceil(S/N)``
  shards, and when a worker joins or leaves only a few shards move besides the ones that
  must. It depends only on the set of member names, so every worker computes the same
  assignment without talking to the others; leases (:mod:`shared.transport.leases`) make the
  ownership exclusive while the members' views differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def participant_key(session: str, participant: str) -> str:
    """The routing key of one participant's media: ``"<session>/<participant>"``."""
    return f"{session}/{participant}"


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def shard_of(key: str, shards: int) -> int:
    """The shard (``0 .. shards-1``) of a routing key; the same in every process and on every machine."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    return _hash64(key) % shards


def _score(member: str, shard: int) -> int:
    return _hash64(f"{member}|{shard}")


def assign(shards: int, members: Iterable[str]) -> dict[str, set[int]]:
    """The desired owner of every shard among ``members``: member -> its shards (every member listed).

    Rendezvous hashing with bounded load: shards are placed strongest preference first; each goes
    to the member ranking it highest that still has room (``ceil(S/N)`` each, and only as many
    members at the ceiling as ``S mod N`` allows), so loads differ by at most one.
    """
    names = sorted(set(members))
    out: dict[str, set[int]] = {m: set() for m in names}
    if not names:
        return out
    n = len(names)
    base, extra = divmod(shards, n)
    ranked = {k: sorted(names, key=lambda m: (-_score(m, k), m)) for k in range(shards)}
    # Place shards in the order of how much their top member prefers them (then by id), so the
    # shards a member likes most are the ones it keeps when the cap binds.
    order = sorted(range(shards), key=lambda k: (-_score(ranked[k][0], k), k))
    at_ceiling = 0
    for k in order:
        for m in ranked[k]:
            load = len(out[m])
            if load < base or (load == base and at_ceiling < extra):
                if load == base:
                    at_ceiling += 1
                out[m].add(k)
                break
    return out


def owner_map(shards: int, members: Iterable[str]) -> dict[int, str]:
    """Shard -> desired owner (the inverse of :func:`assign`)."""
    return {k: m for m, owned in assign(shards, members).items() for k in owned}


def entry_id(shard: int, stream_id: str) -> str:
    """A media entry id that names its shard: ``"<shard>/<stream id>"`` (ids are unique across shards)."""
    return f"{shard}/{stream_id}"


def split_entry_id(qualified: str) -> tuple[int, str]:
    """``"<shard>/<stream id>"`` -> (shard, stream id)."""
    shard, sep, stream_id = qualified.partition("/")
    if not sep or not shard.isdigit():
        raise ValueError(f"not a shard-qualified media entry id: {qualified!r}")
    return int(shard), stream_id

"""The demo's Redis client: writes keys, records the acknowledged ones, reads
them back.

A write counts only when the service acknowledged it under the rule of its
current shape: on a standalone node when Redis answers OK, once a replica
exists when ``WAIT 1`` confirms a replica has it. Every counted write is
recorded, and verification reads every recorded key back.

The client never retries a command by itself: a write whose connection broke
must show up as unconfirmed, not be sent again behind the writer's back (a
resent write could also land after the count was printed).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import redis.asyncio as redis_async
from attrs import define, field
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

__all__ = [
    "AckedWrites",
    "ContinuousWriter",
    "open_client",
    "verify",
    "write_batch",
]

_WAIT_TIMEOUT_MS = 1000
_CONFIRM_TIMEOUT_MS = 5000
_BATCH = 500
_MARKER_KEY = "rolecall-demo:confirm"


@asynccontextmanager
async def open_client(address: str) -> AsyncIterator[redis_async.Redis]:
    """A client for ``127.0.0.1:port`` that never retries a command.

    It is closed on exit, also when the caller is cancelled.
    """
    host, port = address.rsplit(":", 1)
    client = redis_async.Redis(
        host=host,
        port=int(port),
        socket_timeout=3.0,
        socket_connect_timeout=3.0,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


@define
class AckedWrites:
    """Keys the service acknowledged, with the value each must hold."""

    # Key -> value; a key enters only after its write was acknowledged.
    values: dict[str, str] = field(factory=dict)

    def __len__(self) -> int:
        return len(self.values)


async def write_batch(
    client: redis_async.Redis, acked: AckedWrites, prefix: str, count: int
) -> None:
    """Write ``count`` keys in pipelined batches; record each OK."""
    for start in range(0, count, _BATCH):
        pipe = client.pipeline(transaction=False)
        keys = [f"{prefix}:{n}" for n in range(start, min(start + _BATCH, count))]
        for key in keys:
            pipe.set(key, f"value-of-{key}")
        replies = await pipe.execute()
        for key, ok in zip(keys, replies, strict=True):
            if ok is True:
                acked.values[key] = f"value-of-{key}"


@define
class ContinuousWriter:
    """Writes keys one by one until stopped, following the primary around.

    Once stopped, ``attempted == acknowledged + unconfirmed``.

    Args:
        acked: Where acknowledged writes are recorded.
        find_primary: Returns the address the host reaches the current
            primary at (``None`` while there is none).
    """

    acked: AckedWrites
    find_primary: Callable[[], str | None]
    # When true a write counts only once `WAIT 1` confirms a replica has it.
    require_replica: bool = False
    # Writes sent; of those, the acknowledged ones and the ones that failed
    # or went unconfirmed. Only a write in flight is in neither of the two.
    attempted: int = 0
    acknowledged: int = 0
    unconfirmed: int = 0
    # Longest stretch without a counted write while the writer ran, seconds.
    longest_gap: float = 0.0
    _stop: anyio.Event = field(factory=anyio.Event)
    # Set when `run` has returned; `_running` tells whether it ever began.
    _stopped: anyio.Event = field(factory=anyio.Event)
    _running: bool = False

    def stop(self) -> None:
        """Ask the writer to finish after its current write."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        """Wait until `run` has returned, its last write settled and counted."""
        if self._running:
            await self._stopped.wait()

    async def run(self) -> None:
        """Write until stopped."""
        self._running = True
        try:
            await self._run()
        finally:
            self._stopped.set()

    async def _run(self) -> None:
        last_ok = time.monotonic()
        n = 0
        while not self._stop.is_set():
            address = self.find_primary()
            if address is None:
                await anyio.sleep(0.05)  # paces retries while no primary exists
                continue

            try:
                async with open_client(address) as client:
                    while not self._stop.is_set() and self.find_primary() == address:
                        key = f"live:{n}"
                        n += 1
                        if await self._write(client, key):
                            now = time.monotonic()
                            self.longest_gap = max(self.longest_gap, now - last_ok)
                            last_ok = now
            except (RedisError, OSError):
                await anyio.sleep(0.05)  # paces reconnects to a dying primary

    async def confirm_all(self) -> bool:
        """Ask the primary to confirm a replica holds every earlier write.

        ``WAIT`` covers the writes its own connection made, so the check
        writes a marker first: a replica that has the marker has everything
        the primary took before it, from every client.
        """
        address = self.find_primary()
        if address is None:
            return False

        async with open_client(address) as client:
            await client.set(_MARKER_KEY, str(time.time()))
            confirmed = await client.wait(1, _CONFIRM_TIMEOUT_MS)

        return int(confirmed) >= 1

    async def _write(self, client: redis_async.Redis, key: str) -> bool:
        self.attempted += 1
        value = f"value-of-{key}"
        try:
            ok = await client.set(key, value)
            if ok and self.require_replica:
                replicas = await client.wait(1, _WAIT_TIMEOUT_MS)
                ok = int(replicas) >= 1
        except (RedisError, OSError):
            self.unconfirmed += 1
            raise

        if not ok:
            self.unconfirmed += 1
            return False

        self.acknowledged += 1
        self.acked.values[key] = value
        return True


async def verify(address: str, acked: AckedWrites) -> tuple[int, list[str]]:
    """Read every acknowledged key back.

    Returns:
        How many keys hold their value, and the first few that do not.
    """
    good = 0
    bad: list[str] = []
    keys = list(acked.values)
    async with open_client(address) as client:
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start : start + _BATCH]
            values = await client.mget(chunk)
            for key, value in zip(chunk, values, strict=True):
                if value == acked.values[key]:
                    good += 1
                elif len(bad) < 5:
                    bad.append(key)

    return good, bad

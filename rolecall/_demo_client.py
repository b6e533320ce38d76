"""The demo's Redis client: writes keys, records the acknowledged ones, reads
them back.

A write counts only when the service acknowledged it under the rule of its
current shape: on a standalone node when Redis answers OK, once a replica
exists when ``WAIT 1`` confirms a replica has it. Every counted write is
recorded, and verification reads every recorded key back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import redis.asyncio as redis_async
from attrs import define, field
from redis.exceptions import RedisError

__all__ = ["AckedWrites", "ContinuousWriter", "connect", "verify", "write_batch"]

_WAIT_TIMEOUT_MS = 1000
_BATCH = 500


def connect(address: str) -> redis_async.Redis:
    """A client for ``127.0.0.1:port``."""
    host, port = address.rsplit(":", 1)
    return redis_async.Redis(
        host=host,
        port=int(port),
        socket_timeout=3.0,
        socket_connect_timeout=3.0,
        decode_responses=True,
    )


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

    Args:
        acked: Where acknowledged writes are recorded.
        find_primary: Returns the address the host reaches the current
            primary at (``None`` while there is none).
    """

    acked: AckedWrites
    find_primary: Callable[[], str | None]
    # When true a write counts only once `WAIT 1` confirms a replica has it.
    require_replica: bool = False
    # Writes sent, and writes that failed or went unconfirmed.
    attempted: int = 0
    unconfirmed: int = 0
    # Longest stretch without a counted write while the writer ran, seconds.
    longest_gap: float = 0.0
    _stop: anyio.Event = field(factory=anyio.Event)

    def stop(self) -> None:
        """Ask the writer to finish after its current write."""
        self._stop.set()

    async def run(self) -> None:
        """Write until stopped."""
        last_ok = time.monotonic()
        n = 0
        while not self._stop.is_set():
            address = self.find_primary()
            if address is None:
                await anyio.sleep(0.05)  # paces retries while no primary exists
                continue

            client = connect(address)
            try:
                while not self._stop.is_set() and self.find_primary() == address:
                    key = f"live:{n}"
                    n += 1
                    if await self._write(client, key):
                        now = time.monotonic()
                        self.longest_gap = max(self.longest_gap, now - last_ok)
                        last_ok = now
            except (RedisError, OSError):
                await anyio.sleep(0.05)  # paces reconnects to a dying primary
            finally:
                await client.aclose()

    async def confirm_all(self) -> bool:
        """Ask the primary to confirm a replica holds every earlier write."""
        address = self.find_primary()
        if address is None:
            return False

        client = connect(address)
        try:
            confirmed = await client.wait(1, 5000)
        finally:
            await client.aclose()

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

        self.acked.values[key] = value
        return True


async def verify(address: str, acked: AckedWrites) -> tuple[int, list[str]]:
    """Read every acknowledged key back.

    Returns:
        How many keys hold their value, and the first few that do not.
    """
    client = connect(address)
    good = 0
    bad: list[str] = []
    keys = list(acked.values)
    try:
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start : start + _BATCH]
            values = await client.mget(chunk)
            for key, value in zip(chunk, values, strict=True):
                if value == acked.values[key]:
                    good += 1
                elif len(bad) < 5:
                    bad.append(key)
    finally:
        await client.aclose()

    return good, bad

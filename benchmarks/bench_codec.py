"""Codec cost: a payload through the protocol layer against bare msgpack.

rolecall's side is `encode_payload` then `decode_payload`: record to bytes
and back, with every field checked. The baseline packs and unpacks the same
payload's wire map with msgpack alone. The same is done for a result (what
a hook prints, decoded as rolecall reads it). Each figure is the best of a
few timed loops, so a stray pause of the machine does not count.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgpack  # type: ignore[import-untyped]
from _bench import Report

from rolecall.hooks_protocol import (
    HookName,
    HookPayload,
    HookResult,
    MemberInfo,
    Role,
    decode_payload,
    decode_result,
    encode_payload,
    encode_result,
    payload_to_wire,
)

LOOPS = 5
REPEATS = 1
ROUNDS = 10_000


def _payload() -> HookPayload:
    """What a ``role`` hook gets in a two-member redundant service."""
    primary = MemberInfo(
        id="cache-1", role=Role.PRIMARY, address="cache-1:6379", epoch=3
    )
    replica = MemberInfo(id="cache-2", role=None, address="cache-2:6379", epoch=0)
    return HookPayload(
        hook=HookName.ROLE,
        service="cache",
        member=replica,
        members=(primary, replica),
        config={"maxmemory": "64mb"},
        env={"REDIS_PASSWORD": "not-a-real-secret"},
        request={"role": "replica", "primary": "cache-1", "epoch": 4},
    )


def _result() -> HookResult:
    """What a ``status`` hook answers on a replica."""
    return HookResult(
        data={
            "role": "replica",
            "healthy": True,
            "replication_offset": 123_456,
            "link_up": True,
            "epoch": 4,
            "details": {"synced": True, "connected_replicas": 0},
        }
    )


def _best(work: Callable[[], object]) -> float:
    """Best seconds per round over `LOOPS` loops of `ROUNDS` rounds."""
    best = float("inf")
    for _ in range(LOOPS):
        started = time.perf_counter()
        for _ in range(ROUNDS):
            work()

        best = min(best, time.perf_counter() - started)

    return best / ROUNDS


def main() -> None:
    payload = _payload()
    wire = payload_to_wire(payload)
    result = _result()
    result_wire = {"protocol": 1, "data": result.data, "message": result.message}
    if decode_payload(encode_payload(payload)) != payload:
        raise SystemExit("the payload does not survive a round trip")

    pack, unpack = msgpack.packb, msgpack.unpackb
    report = Report("codec", "8. Codec")
    for _ in range(REPEATS):
        rolecall = _best(lambda: decode_payload(encode_payload(payload)))
        bare = _best(lambda: unpack(pack(wire), raw=False))
        report.check(
            "payload",
            "µs per payload encode + decode (protocol layer)",
            "µs",
            baseline_what="bare msgpack packb + unpackb of its wire map",
            ratio_what="rolecall / baseline",
            op="<=",
            limit=1.5,
        ).add(rolecall * 1e6, bare * 1e6, rolecall / bare)

        rolecall = _best(lambda: decode_result(encode_result(result)))
        bare = _best(lambda: unpack(pack(result_wire), raw=False))
        report.check(
            "result",
            "µs per result encode + decode (protocol layer)",
            "µs",
            baseline_what="bare msgpack packb + unpackb of its wire map",
            ratio_what="rolecall / baseline",
            op=None,
        ).add(rolecall * 1e6, bare * 1e6, rolecall / bare)

    size = len(encode_payload(payload))
    report.notes.append(
        f"payload: the `role` hook's in a two-member service ({size} bytes"
        " packed); result: a replica's `status`. Each sample is the best of"
        f" {LOOPS} loops of {ROUNDS:,} round trips."
    )
    report.emit()


if __name__ == "__main__":
    main()

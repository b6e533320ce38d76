"""Fresh positions for a failover: ask the candidates, then choose.

The reconciler promotes the synced replica with the highest replication
offset. Offsets come from ``status`` probes, which run every probe interval
and in the background, so the ones on record may be seconds old when the
writer is lost — and replicas keep replaying what they received after that.
So a pass that is about to promote first fences the lost writer (nothing
reaches the replicas after that), then, with more than one candidate to
choose from, asks every candidate's ``status`` again, all at once, under a
short deadline (`CANDIDATE_WAIT`), and plans again on what they answer.

A candidate that does not answer in time is passed over while another one
did answer: a replica that cannot report its position cannot be trusted to
take writes soon either. When none answers, the positions on record decide.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio

from rolecall.hooks_protocol import Role

from ._acting import Acting
from ._members import Member
from ._reconciler import ApplyRole, FenceMember, Step, promotion_candidates

__all__ = [
    "CANDIDATE_WAIT",
    "fence_lost_writers",
    "promotes",
    "refresh_candidates",
]

CANDIDATE_WAIT = 2.0
"""Seconds a failover waits for its candidates' ``status`` answers."""

_WRITER_ROLES = frozenset({Role.STANDALONE, Role.PRIMARY})


def promotes(steps: Sequence[Step], members: dict[str, Member]) -> bool:
    """Whether ``steps`` hand the writer role to a member that follows now."""
    return any(
        isinstance(step, ApplyRole)
        and step.role in _WRITER_ROLES
        and step.member in members
        and members[step.member].actor.role is Role.REPLICA
        for step in steps
    )


async def fence_lost_writers(controller: Acting, steps: Sequence[Step]) -> bool:
    """Run the fences among ``steps`` now, ahead of the rest.

    Returns:
        Whether every fence ran (see `Acting.act`).
    """
    fences: list[Step] = [step for step in steps if isinstance(step, FenceMember)]

    return not fences or await controller.act(fences)


async def refresh_candidates(controller: Acting) -> frozenset[str]:
    """Ask every promotion candidate for its ``status`` now.

    Returns:
        The candidates that did not answer within `CANDIDATE_WAIT` seconds;
        empty when fewer than two candidates make a choice.
    """
    observed = [member.observed() for member in controller.members.values()]
    candidates = [controller.members[m.id] for m in promotion_candidates(observed)]
    if len(candidates) < 2:
        return frozenset()

    started = time.monotonic()
    asked = anyio.current_time()
    with anyio.move_on_after(CANDIDATE_WAIT):
        async with anyio.create_task_group() as probes:
            for member in candidates:
                probes.start_soon(controller.probe, member, name=f"fresh:{member.id}")

    silent = frozenset(m.id for m in candidates if m.last_answer < asked)
    positions = {m.id: m.offset for m in candidates if m.id not in silent}
    shown = ", ".join(f"{member} at {offset}" for member, offset in positions.items())
    controller.event(
        "candidates_probed",
        None,
        f"positions at failover time: {shown or 'no answer'}"
        + (f"; passed over {', '.join(sorted(silent))}" if silent else ""),
        duration=time.monotonic() - started,
        positions=positions,
        passed_over=sorted(silent),
    )

    return silent if positions else frozenset()

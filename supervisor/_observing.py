"""Observing a service: which containers run, and whether members answer.

A pass looks at the engine's listing and starts a ``status`` probe of each
member that is not being probed already, then waits for the probes a short
while (`PROBE_WAIT`), never longer: a slow or hung ``status`` hook on one
member cannot hold up noticing that another died. A probe that finishes
later still records what it found. Between passes, and while passes back
off after failures, a ticker keeps probing every ``probe_interval``.

A member whose ``status`` hook runs, or keeps failing, for longer than the
service's ``unresponsive_after`` is unresponsive: it counts as lost until it
has been restarted (or, as a lost writer, fenced and replaced). So is a
writer whose ``status`` keeps answering that it is unhealthy for as long:
its server died inside a container that still runs, and no client write
succeeds, so waiting for the container to die would wait for ever.
"""

from __future__ import annotations

import math
import time

import anyio
import structlog

from rolecall.actors import (
    ActorState,
    ContainerInfo,
    ContainerState,
    Probe,
    Superseded,
)
from rolecall.hooks_protocol import (
    ContainerGoneError,
    EngineError,
    HookName,
    MemberStatus,
    RolecallError,
)

from ._controller_state import ASK_TIMEOUT, ControllerState
from ._members import Member
from ._naming import LABEL_MANAGED, LABEL_SERVICE

__all__ = ["ASK_TIMEOUT", "PROBE_WAIT", "Observing", "is_running", "loss_cause"]

_log = structlog.get_logger("rolecall.supervisor")

PROBE_WAIT = 1.0
"""Seconds a pass waits for the probes it started before it plans."""

_ACTOR_ENDED = frozenset({ActorState.STOPPED, ActorState.CRASHED})

# A paused container still runs: it is caught by the unresponsive deadline.
_RUNNING = frozenset({ContainerState.RUNNING, ContainerState.PAUSED})


def is_running(info: ContainerInfo | None) -> bool:
    """Whether a container's process runs (a paused one does)."""
    return info is not None and info.state in _RUNNING


def loss_cause(info: ContainerInfo | None) -> str:
    """Why a container is down: ``removed`` (gone from the engine, or being
    removed), ``oom``, ``exited`` (code 0), ``killed`` (by a signal) or
    ``crashed`` (any other code)."""
    if info is None or info.state is ContainerState.REMOVING:
        return "removed"

    if info.oom_killed:
        return "oom"

    if info.exit_code == 0:
        return "exited"

    if info.exit_code is not None and info.exit_code > 128:
        return "killed"

    return "crashed"


class Observing(ControllerState):
    """The observing part of a `ServiceController`."""

    __slots__ = ()

    async def observe(self) -> None:
        """Refresh what the engine and the members say; never waits long."""
        for member in list(self.members.values()):
            if member.ref.state in _ACTOR_ENDED:
                await self.replace_actor(member)

        listed_at = anyio.current_time()
        for engine in self.engines_in_use():
            by_id = await self._list(engine)
            for member in self.members.values():
                if member.engine != engine:
                    continue

                if by_id is not None:  # else unknown: see `_list`
                    info = by_id.get(member.container_id)
                    self.see(member, info, listed_at=listed_at)

        self.start_probes()
        await self._wait_probes()
        self.check_answering()

    async def _list(self, engine: str) -> dict[str, ContainerInfo] | None:
        """The service's containers on ``engine`` by id; ``None`` when the
        engine does not answer.

        Members on an engine that does not answer are unknown, not lost:
        they are marked unhealthy, their probes fail until the deadline
        makes them unresponsive, and only then does the reconciler act,
        on that engine (fence, restart). A member is never recreated on
        another engine by guesswork: only a move places members elsewhere,
        and an engine that comes back finds its containers where they were.
        The service's own engine not answering fails the pass, as before.
        """
        labels = {LABEL_MANAGED: "true", LABEL_SERVICE: self.spec.name}
        runtime = self.engines[engine]
        try:
            containers = await runtime.list_containers(labels=labels)
        except EngineError as error:
            for member in self.members.values():
                if member.engine == engine:
                    member.healthy = False

            if engine == self.spec.engine:
                raise

            _log.warning(
                "engine_unreachable",
                service=self.spec.name,
                engine=engine,
                error=str(error),
            )
            return None

        return {c.id: c for c in containers}

    def see(
        self,
        member: Member,
        info: ContainerInfo | None,
        *,
        listed_at: float | None = None,
    ) -> None:
        """Take in what the engine says about a member's container."""
        running = is_running(info)
        if (
            running
            and not member.alive
            and member.lost_at is not None
            and listed_at is not None
            and member.lost_at >= listed_at
        ):
            # A background probe found it gone after this listing was taken:
            # the listing is older news, and reviving the member would report
            # the same loss twice.
            return

        if member.alive and not running:
            self.lost(member, info)
        elif running and not member.alive and not member.changing:
            # Started again behind rolecall's back: its processes are new,
            # so it is prepared again before it takes a role.
            member.actor.container_restarted()

        member.alive = running
        member.missing = info is None
        member.dirty = False
        if info is not None and not running:
            member.exit_code = info.exit_code
            member.oom_killed = info.oom_killed

    def lost(self, member: Member, info: ContainerInfo | None) -> None:
        """Report a member whose container stopped without rolecall's say."""
        member.healthy = False
        member.alive = False
        member.lost_at = anyio.current_time()
        self.converged_generation = -1
        self._writer_lost(member)
        cause = loss_cause(info)
        exit_code = info.exit_code if info is not None else None
        oom = info.oom_killed if info is not None else False
        member.exit_code, member.oom_killed = exit_code, oom
        self.event(
            "member_lost",
            member.id,
            "container removed from the engine (not by rolecall)"
            if cause == "removed"
            else f"container stopped (exit code {exit_code}, {cause})",
            exit_code=exit_code,
            oom_killed=oom,
            cause=cause,
            role=member.actor.role.value if member.actor.role else None,
        )

    async def replace_actor(self, member: Member) -> None:
        """Give a member whose actor ended a new one on the same container.

        An actor ends on its own only when it crashed (a told message
        failed; the crash watch filed that message as a dead letter) or
        was stopped by someone else; either way the container is still
        there and needs an actor to run its hooks. It counts as a restart.
        """
        state = member.ref.state
        if not self.note_restart(
            f"the actor of {member.id} had {state.value}", anyio.current_time()
        ):
            return

        await self.spawner.respawn(member)
        _log.warning(
            "member_actor_replaced",
            service=self.spec.name,
            member=member.id,
            old_state=state.value,
        )
        self.event(
            "actor_replaced",
            member.id,
            f"its actor had {state.value}; a new one prepares it again",
            old_state=state.value,
        )

    # -- probes --------------------------------------------------------------

    def start_probes(self) -> None:
        """Start a probe of each member that runs and is not being probed."""
        if self.tasks is None or self.failure is not None:
            return

        for member in self.members.values():
            self.start_probe(member)

    def start_probe(self, member: Member) -> None:
        """Start a probe of ``member`` if it runs and is not being probed."""
        if self.tasks is None or self.failure is not None:
            return

        if member.alive and member.ready and not member.probing:
            member.probing = True
            self.tasks.start_soon(
                self._probe_in_background, member, name=f"probe:{member.id}"
            )

    async def _probe_in_background(self, member: Member) -> None:
        try:
            await self.probe(member)
        finally:
            member.probing = False
            self.stir()

    async def _wait_probes(self) -> None:
        with anyio.move_on_after(PROBE_WAIT):
            while not self.urgent and any(m.probing for m in self.members.values()):
                await self.stirred.wait()

    async def probe(self, member: Member) -> None:
        """Run ``status`` on a member and keep what it reports."""
        try:
            report = await self.ask_member(member, Probe(self.view(member.engine)))
        except ContainerGoneError:
            await self._gone_during_probe(member)
            return
        except RolecallError as error:
            member.healthy = False
            # One warning per streak of failures; the rest at debug level.
            log = _log.debug if member.silent_since is not None else _log.warning
            if member.silent_since is None:
                member.silent_since = anyio.current_time()

            log(
                "probe_failed",
                service=self.spec.name,
                member=member.id,
                error=str(error),
                error_type=type(error).__name__,
            )
            return

        if isinstance(report, Superseded):
            return  # a role request cut it short; the next probe tells

        assert isinstance(report, MemberStatus)  # noqa: S101  (Probe's reply type)
        synced = member.synced
        member.record_status(report)
        if member.synced and not synced:
            # Kept: once its primary is gone the replica cannot show it.
            # A probe has no pass to fail; the next step's write retries.
            try:
                self.persist()
            except RolecallError as error:
                _log.warning(
                    "journal_write_failed", service=self.spec.name, error=str(error)
                )

        member.last_answer = anyio.current_time()
        member.silent_since = None
        # Members keep the highest epoch they accepted, across restarts of
        # rolecall too, and refuse older ones: the next role command must
        # be newer than any of them.
        self.epoch = max(self.epoch, report.epoch)

    async def _gone_during_probe(self, member: Member) -> None:
        # The container died between the listing and this probe: the same
        # loss the listing would have shown a moment later.
        if not member.alive or member.changing:
            return

        try:
            runtime = self.runtime_of(member)
            info: ContainerInfo | None = await runtime.inspect_container(
                member.container_id
            )
        except RolecallError:
            info = None

        # It may be back already (restarted meanwhile): see() tells.
        if member.alive and not member.changing:
            self.see(member, info)
            self.wake(urgent=True)

    def check_answering(self) -> None:
        """Mark members silent past the deadline unresponsive."""
        now = anyio.current_time()
        deadline = self.spec.supervision.unresponsive_after
        for member in self.members.values():
            if not (member.alive and member.ready) or member.unresponsive:
                continue

            silent = (
                member.silent_since if member.silent_since is not None else math.inf
            )
            running = member.actor.running
            if running is not None and running[0] is HookName.STATUS:
                silent = min(silent, running[1])

            if now - silent >= deadline:
                self._unresponsive(member, now - silent, "no_answer")
            elif (
                member.unhealthy_since is not None
                and now - member.unhealthy_since >= deadline
            ):
                self._unresponsive(member, now - member.unhealthy_since, "unhealthy")

    def _unresponsive(self, member: Member, silent: float, reason: str) -> None:
        member.unresponsive = True
        member.healthy = False
        self.converged_generation = -1
        self._writer_lost(member)
        if member.is_writer:
            # A replica's role hook may wait a minute for a sync from this
            # writer: the failover must not wait behind it.
            self.interrupt_steps(member)
        deadline = self.spec.supervision.unresponsive_after
        what = (
            "gave no answer"
            if reason == "no_answer"
            else "answered that it, the writer, is unhealthy"
        )
        self.event(
            "member_unresponsive",
            member.id,
            f"its status hook {what} for {silent:.1f}s (deadline {deadline:g}s)",
            silent=round(silent, 3),
            reason=reason,
            role=member.actor.role.value if member.actor.role else None,
        )
        self.wake(urgent=True)

    def interrupt_steps(self, lost: Member) -> None:
        """Cut short the steps a pass is running on other members: ``lost``
        changes what they should be; the next pass plans again."""
        if self.acting is not None and self.acting_on != lost.id:
            self.event(
                "steps_interrupted",
                self.acting_on,
                f"{lost.id} was lost while steps ran; the next pass plans again",
                lost=lost.id,
            )
            self.acting.cancel()

    def _writer_lost(self, member: Member) -> None:
        if not member.is_writer or self.superseded(member):
            return

        if self.writer_lost_at is None:
            self.writer_lost_at = time.time()
            self.lost_writer = member.id

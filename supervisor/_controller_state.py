"""What a service controller knows, and the bookkeeping every part of it shares.

`ControllerState` holds the fields of a `ServiceController` and the helpers
its parts use: the hooks' view of the service, the timeline, the writer.
The parts are mixins over it: ``_observing`` (listing, probes, losses),
``_acting`` (the steps), ``_switchover`` (a graceful change of primary) and
``_controller`` (the loop, supervision and the public calls).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup
from attrs import define, field

from rolecall.actors import (
    ContainerMessage,
    ContainerRuntime,
    HookConvention,
    ServiceView,
)
from rolecall.hooks_protocol import MailboxFullError, MemberInfo, Plan, Topology

from ._dead_letters import DeadLetterLog
from ._durable import save_snapshot
from ._identity import ControlPlaneIdentity, process_identity
from ._journal import Journal
from ._members import Member, MemberSpawner
from ._naming import DEFAULT_ENGINE
from ._records import MemberView, ServiceEvent, ServiceStatus
from ._service_record import ChangeRecord, MoveRecord, ServiceRecord
from ._spec import ServiceSpec
from ._supervision import Backoff, Intensity

__all__ = ["ControllerState"]

# Timeline events that mean rolecall stopped trying: logged as errors.
_ERROR_KINDS = frozenset({"service_failed"})

_log = structlog.get_logger("rolecall.supervisor")

ASK_TIMEOUT = 900.0
"""Seconds any ask of a member may take; hooks carry their own deadlines,
so this only stops a hang."""


@define(eq=False)
class ControllerState:
    """The state of one service's controller; see `ServiceController`.

    Args:
        spec: The desired state.
        plan: The image's plan, probed when the spec was accepted.
        convention: How the image's hooks are called.
        engines: Every engine's runtime, by name; members run on the one
            they were placed on, new members on the spec's.
        spawner: Starts container actors in the supervisor's task group.
        emit: Receives timeline events.
        probe_interval: Seconds between passes when nothing wakes it.
    """

    spec: ServiceSpec
    plan: Plan
    convention: HookConvention
    engines: Mapping[str, ContainerRuntime]
    spawner: MemberSpawner
    emit: Callable[[ServiceEvent], None]
    probe_interval: float = 2.0
    # Members by id, oldest first; a member leaves only when removed.
    members: dict[str, Member] = field(factory=dict)
    # Ordinal of the next member created; ids are never reused.
    next_number: int = 1
    # Highest epoch handed out; every role command gets a higher one.
    epoch: int = 0
    # Bumped on every spec change; a pass that plans nothing converges it.
    generation: int = 0
    # The generation the last healthy, empty pass saw; equal to
    # `generation` when the service has converged to its current spec. Set
    # back to -1 when a member is lost, a pass finds work or fails, until a
    # pass finds nothing to do and every member up again.
    converged_generation: int = -1
    # Whether steps ran since the last pass that found nothing to do; the
    # next such pass reports the service converged again.
    acted_since_converged: bool = True
    # Why the last pass failed; None after a pass that did not fail.
    last_error: str | None = None
    # While True a lost writer is fenced but no replica is promoted.
    failover_paused: bool = False
    # Why supervision gave up on the service; None while it has not. No
    # pass runs while it is set; a new spec clears it.
    failure: str | None = None
    # What member actors could not handle.
    dead_letters: DeadLetterLog = field(init=False)
    # Failed passes in a row, and the delay they call for.
    pass_backoff: Backoff = field(init=False)
    # Restarts in a row, and the delay before the next may happen.
    restart_backoff: Backoff = field(init=False)
    # Restarts within the intensity window.
    intensity: Intensity = field(init=False)
    # Clock time before which no pass runs but for an urgent reason (set
    # after a failed pass); 0 when passes may run at once.
    retry_at: float = 0.0
    # Clock time before which no member is restarted; the next pass comes
    # then if one is waiting.
    restart_at: float = 0.0
    # The delay the last restart set before the next may happen.
    restart_delay: float = 0.0
    # Clock time of the last restart, and the seconds from the one before
    # it to it (None for the first).
    restarted_at: float | None = None
    restart_gap: float | None = None
    # When the writer was found lost (wall clock), and which member it was;
    # None while no writer is lost.
    writer_lost_at: float | None = None
    lost_writer: str | None = None
    # Whether a `degraded` event was emitted since the last convergence.
    degraded_reported: bool = False
    # Where probes run while the loop runs; None before `run` and after.
    tasks: TaskGroup | None = None
    # Set to wake the loop early (engine event, spec change, probe end).
    wake_event: anyio.Event = field(factory=anyio.Event)
    # Whether the pending wake-up must cut a backoff short.
    urgent: bool = False
    # Set (and replaced) whenever a probe ends or the loop is woken, for a
    # pass waiting on its probes.
    stirred: anyio.Event = field(factory=anyio.Event)
    # Set (and replaced) after every pass, for waiters.
    passed: anyio.Event = field(factory=anyio.Event)
    # Cancelled when an unexpected loss makes the steps under way moot;
    # None while no steps run.
    acting: anyio.CancelScope | None = None
    # The member the step under way acts on; None between steps.
    acting_on: str | None = None
    # The hooks' view as `view` last built it for each engine, and what it
    # was built from (the spec, the plan, each member's id, role, epoch,
    # engine and peer ports); rebuilt only when one of those changed.
    _views: dict[str, tuple[list[object], ServiceView]] = field(factory=dict)
    # Where the service's record is kept; None keeps nothing on disk.
    journal: Journal | None = None
    # The record a previous control plane left, until adoption has used it.
    journaled: ServiceRecord | None = None
    # Topology and replicas the caller's spec asked for; a conversion
    # changes `spec` and keeps this, so a restart can tell them apart.
    source: tuple[Topology, int] = field(init=False)
    # Whether the service's containers on the engine have been adopted; no
    # step is planned before.
    adopted: bool = False
    # Who this control plane is, as the service's claim names it.
    identity: ControlPlaneIdentity = field(factory=process_identity)
    # Whether the service's claim on the engine is ours, as far as this
    # controller knows; every pass checks it (see ``_claiming``).
    claimed: bool = False
    # Whether the next claim may replace another control plane's; cleared
    # once the claim is ours.
    take_over: bool = False
    # The engine the service ran on before its last move finished (the one
    # the caller's spec may still name); `spec.engine` when it never moved.
    source_engine: str = field(init=False)
    # The move to another engine under way; None when none is (see
    # ``_moving``). Journaled with every snapshot.
    moving: MoveRecord | None = None
    # Callers of `move` waiting for the move under way to end; answered
    # and emptied when it finishes or is undone.
    move_waiters: list[Any] = field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.source = (self.spec.topology, self.spec.replicas)
        self.source_engine = self.spec.engine
        self.dead_letters = DeadLetterLog(self.spec.name)
        self.pass_backoff = Backoff(self.spec.supervision)
        self.restart_backoff = Backoff(self.spec.supervision)
        self.intensity = Intensity(self.spec.supervision)

    # -- engines -------------------------------------------------------------

    @property
    def runtime(self) -> ContainerRuntime:
        """The runtime of the engine new members are placed on."""
        return self.engines[self.spec.engine]

    @property
    def home_runtime(self) -> ContainerRuntime:
        """The runtime of the default engine, where the service's claim is
        kept wherever its members run (see ``_claim``)."""
        return self.engines[DEFAULT_ENGINE]

    def runtime_of(self, member: Member) -> ContainerRuntime:
        """The runtime of the engine ``member`` runs on."""
        return self.engines[member.engine]

    def engines_in_use(self) -> list[str]:
        """The spec's engine, then every other engine a member runs on."""
        names = [self.spec.engine]
        for member in self.members.values():
            if member.engine not in names:
                names.append(member.engine)

        return names

    # -- waking --------------------------------------------------------------

    def wake(self, *, urgent: bool = False) -> None:
        """Run a pass now rather than at the next interval.

        An ``urgent`` wake-up also cuts a backoff short: a spec change, an
        operator's request, a member lost unexpectedly.
        """
        self.urgent |= urgent
        self.wake_event.set()
        self.stir()

    def stir(self) -> None:
        """Wake whoever waits on `stirred`."""
        stirred, self.stirred = self.stirred, anyio.Event()
        stirred.set()

    # -- the journal ---------------------------------------------------------

    def persist(self, change: ChangeRecord | None = None) -> None:
        """Write the service's record, with the step under way, if kept.

        Nothing is written before adoption: until then the journal's record
        holds what this controller does not know yet.

        Raises:
            StateError: The disk refused the write.
        """
        if self.journal is not None and self.adopted:
            save_snapshot(self.journal, self, change)

    def take_epoch(self, change: ChangeRecord) -> int:
        """A new epoch, written to the journal before anyone is sent it.

        Raises:
            StateError: The disk refused the write; the epoch is not used.
        """
        self.epoch += 1
        self.persist(
            ChangeRecord(
                step=change.step,
                member=change.member,
                role=change.role,
                primary=change.primary,
                epoch=self.epoch,
            )
        )

        return self.epoch

    # -- supervision ---------------------------------------------------------

    def note_restart(self, what: str, now: float) -> bool:
        """Count one restart against the backoff and the intensity limit.

        Args:
            what: What restarted, for the reason if this was one too many.
            now: The clock time (anyio's) of the restart.

        Returns:
            Whether the service is still within its limit; when not, the
            controller has given up on it (see `give_up`).
        """
        delay = self.restart_backoff.fail(now)
        self.restart_at = now + delay
        self.restart_delay = delay
        if self.restarted_at is not None:
            self.restart_gap = now - self.restarted_at
        self.restarted_at = now
        if self.intensity.record(now):
            return True

        settings = self.spec.supervision
        self.give_up(
            f"more than {settings.max_restarts} restarts within"
            f" {settings.within:g}s (the last: {what}); fix the cause, then"
            " apply the spec again"
        )
        return False

    def give_up(self, reason: str) -> None:
        """Mark the service failed: no pass runs until a new spec comes.

        The controller is the service's supervisor and the `Supervisor` its
        parent; escalating to the top means this: the service is marked
        failed with the reason, a ``service_failed`` event goes out, and
        every other service carries on.
        """
        self.failure = reason
        self.converged_generation = -1
        self.event("service_failed", None, reason)

    # -- members -------------------------------------------------------------

    async def ask_member(self, member: Member, message: ContainerMessage) -> object:
        """Ask a member's actor; a full mailbox is logged, then raised.

        Raises:
            MailboxFullError: The member's mailbox is full (see
                `MAILBOX_CAPACITY`): refused at once, never waited for.
            RolecallError: Whatever the hook run raised.
        """
        try:
            return await member.ref.ask(message, timeout=ASK_TIMEOUT)
        except MailboxFullError:
            _log.warning(
                "mailbox_overflow",
                service=self.spec.name,
                member=member.id,
                refused=type(message).__name__,
            )
            raise

    # -- status --------------------------------------------------------------

    def status(self) -> ServiceStatus:
        """A snapshot of the service as last observed."""
        writer = self.writer()
        return ServiceStatus(
            name=self.spec.name,
            image=self.spec.image,
            topology=self.spec.topology,
            replicas=self.spec.replicas,
            converged=self.converged_generation == self.generation,
            epoch=self.epoch,
            primary=writer.id if writer else None,
            members=tuple(self.member_view(m) for m in self.members.values()),
            last_error=self.last_error,
            failover_paused=self.failover_paused,
            failure=self.failure,
            dead_letters=self.dead_letters.total,
            engine=self.spec.engine,
            moving=_moving(self.moving),
        )

    def view(self, engine: str | None = None) -> ServiceView:
        """What the hooks of members on ``engine`` (by default the spec's)
        are told about the service.

        Addresses are as seen from that engine (see `address`). Every ask
        carries a view, and most asks find the members as the last one
        did: the view is reused while nothing it shows has changed, which
        spares a service of n members n new records per ask.
        """
        engine = engine or self.spec.engine
        key: list[object] = [self.spec, self.plan]
        for m in self.members.values():
            key += (m.id, m.actor.role, m.actor.epoch, m.engine, m.peer_ports)

        cached = self._views.get(engine)
        if cached is not None and key == cached[0]:
            return cached[1]

        view = ServiceView(
            service=self.spec.name,
            members=tuple(
                MemberInfo(
                    id=m.id,
                    role=m.actor.role,
                    address=self.address(m.id, seen_from=engine),
                    epoch=m.actor.epoch,
                )
                for m in self.members.values()
            ),
            config=self.spec.config,
            env=self.spec.env,
            secret_keys=self.spec.secret_keys,
            timeouts=self.spec.timeouts,
        )
        self._views[engine] = (key, view)

        return view

    def writer(self) -> Member | None:
        """The member taking writes, if one runs and answers.

        Of the members holding a writer role, the one that got it under the
        newest epoch: an older one (a fenced primary back after a failover)
        was superseded, and takes no writes even while it runs.
        """
        writers = [m for m in self.members.values() if m.is_writer]
        if not writers:
            return None

        newest = max(writers, key=lambda m: m.actor.epoch)
        if not newest.alive or newest.unresponsive:
            return None

        return newest

    def superseded(self, member: Member) -> bool:
        """Whether another member took the writer role under a newer epoch."""
        return member.is_writer and any(
            other.is_writer and other.actor.epoch > member.actor.epoch
            for other in self.members.values()
        )

    def address(self, member_id: str, *, seen_from: str | None = None) -> str:
        """``host:port`` at which members on ``seen_from`` (an engine; by
        default the member's own) reach ``member_id``.

        On its own engine a member is reached by its network alias; from
        another engine at its engine's peer address and the port published
        there. A member whose engine has no peer address (or whose port is
        not published yet) shows its alias: other engines cannot reach it,
        which a move checks before it starts.
        """
        port = self.plan.ports[0]
        member = self.members.get(member_id)
        if member is None or seen_from in (None, member.engine):
            return f"{member_id}:{port}"

        peer = self.spawner.peer_addresses.get(member.engine)
        published = member.peer_ports.get(port)
        if peer is None or published is None:
            return f"{member_id}:{port}"

        return f"{peer}:{published}"

    def member_view(self, member: Member) -> MemberView:
        """One member as ``status`` shows it."""
        port = member.host_ports.get(self.plan.ports[0])
        alive = member.alive and not member.unresponsive
        return MemberView(
            id=member.id,
            role=member.actor.role,
            alive=alive,
            ready=member.ready and alive,
            healthy=member.healthy,
            offset=member.offset,
            epoch=member.actor.epoch,
            container_id=member.container_id,
            container_name=member.name,
            address=self.address(member.id),
            published=f"127.0.0.1:{port}" if port else None,
            following=member.actor.primary,
            extra=member.extra,
            engine=member.engine,
        )

    # -- timeline ------------------------------------------------------------

    def event(
        self,
        kind: str,
        member: str | None,
        detail: str,
        *,
        duration: float | None = None,
        **fields: object,
    ) -> None:
        """Log one timeline event and hand it to subscribers."""
        event = ServiceEvent(
            time=time.time(),
            service=self.spec.name,
            kind=kind,
            member=member,
            detail=detail,
            duration=duration,
            fields=fields,
        )
        log = _log.error if kind in _ERROR_KINDS else _log.info
        log(
            kind,
            service=self.spec.name,
            member=member,
            detail=detail,
            duration_ms=None if duration is None else round(duration * 1000),
            **fields,
        )
        self.emit(event)


def _moving(move: MoveRecord | None) -> str | None:
    if move is None:
        return None

    return f"to {move.target} by {move.way}: {move.phase}"

"""A service's members: their containers, volumes and actors.

`MemberSpawner` is the only place that creates, restarts and removes member
containers; `Member` is the controller's record of one member.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import anyio
from attrs import define, field

from rolecall.actors import (
    ActorRef,
    ActorSpawner,
    ChildCrashed,
    ContainerActor,
    ContainerInfo,
    ContainerMessage,
    ContainerRuntime,
    ContainerSpec,
    ContainerState,
    HookConvention,
    MemberPhase,
    OverflowPolicy,
)
from rolecall.hooks_protocol import ContainerGoneError, MemberStatus, Plan, Role

from ._naming import (
    DEFAULT_ENGINE,
    LABEL_EXTRA,
    container_name,
    member_labels,
    network_name,
    service_labels,
    volume_mounts,
)
from ._reconciler import ObservedMember
from ._spec import ServiceSpec

__all__ = ["Member", "MemberSpawner"]

_WRITER_ROLES = frozenset({Role.STANDALONE, Role.PRIMARY})

MAILBOX_CAPACITY = 64
"""Messages a member's mailbox holds. The controller keeps at most a few
there (role requests coalesce into one), so a full mailbox means a flood
from elsewhere: the send is refused with `MailboxFullError` at once
(`OverflowPolicy.REJECT`), logged as ``mailbox_overflow``, and the next
pass tries again."""

_LIVE_STATES = frozenset(
    {ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING}
)


@define(eq=False)
class Member:
    """The controller's record of one member.

    The container actor holds what the hooks did (phase, role, epoch); this
    record holds what the engine and the ``status`` hook said.
    """

    id: str
    number: int
    name: str
    container_id: str
    actor: ContainerActor
    ref: ActorRef[ContainerMessage]
    # Named volumes holding its data; they outlive its container.
    volumes: tuple[str, ...] = ()
    # The labels its container was created with; a container recreated
    # after it vanished gets the same.
    labels: dict[str, str] = field(factory=dict)
    # Container port -> port published on 127.0.0.1.
    host_ports: dict[int, int] = field(factory=dict)
    # Container port -> port published on its engine's peer address, for
    # members on other engines; empty when the engine has none.
    peer_ports: dict[int, int] = field(factory=dict)
    # Whether the container ran at the last observation.
    alive: bool = True
    # Whether the container no longer exists at all.
    missing: bool = False
    # Whether an engine event arrived since the last observation.
    dirty: bool = False
    # Whether the last `status` said the service answers.
    healthy: bool = False
    # Replication offset from the last `status`.
    offset: int = 0
    # Whether it holds the service's data (a writer, or a replica that
    # completed a sync); once true it stays true for the member's life.
    synced: bool = False
    # Whether rolecall killed it on purpose to keep it from taking writes.
    fenced: bool = False
    # How its container last ended while it is down; None while it runs.
    exit_code: int | None = None
    # Whether its container was last killed for memory.
    oom_killed: bool = False
    # Clock time (anyio's) at which it was last found lost; a listing of
    # containers taken before then is older news and must not revive it.
    lost_at: float | None = None
    # Clock time (anyio's) of its last answered status, or of the moment it
    # was last prepared; the unresponsive deadline counts from here.
    last_answer: float = 0.0
    # Whether a status probe of it is under way; at most one at a time.
    probing: bool = False
    # Clock time (anyio's) of the first failed probe since the last answered
    # one; None while probes answer.
    silent_since: float | None = None
    # Clock time (anyio's) since which its `status` has answered that it,
    # a writer, is unhealthy (its server died inside a container that still
    # runs, say); None while it reports healthy, and for any other role.
    unhealthy_since: float | None = None
    # Whether its last status said its service answers (`healthy` as the
    # hook reported it, a replica's link aside); true until a report says
    # otherwise.
    serving: bool = True
    # Whether it stopped answering past the deadline; cleared by a restart.
    unresponsive: bool = False
    # Clock time (anyio's) since which its `status` has reported it a
    # replica whose link to the primary is down; None while the link is up
    # (or not reported), for any other role, and after a role was applied.
    link_down_since: float | None = None
    # Whether rolecall itself is stopping, killing or starting its
    # container, so that the engine's events about it are expected.
    changing: bool = False
    # The role it was created to take beside the topology (an extra
    # member, see `ServiceSpec.extras`); None for the topology's members.
    # Fixed for the member's life.
    extra: Role | None = None
    # Whether its last status, taken after its last role command, reported
    # that role and healthy; false again after every role change.
    confirmed: bool = False
    # The engine its container runs on, by name; fixed for the member's
    # life (a move makes new members, it never carries one over).
    engine: str = DEFAULT_ENGINE

    @property
    def ready(self) -> bool:
        """Whether the hooks prepared it since its container last started."""
        return self.actor.phase is MemberPhase.RUNNING

    @property
    def is_writer(self) -> bool:
        """Whether it was last told to take writes."""
        return self.actor.role in _WRITER_ROLES

    def record_status(self, report: MemberStatus) -> None:
        """Keep what a ``status`` run reported.

        ``synced`` only ever turns on: a replica whose link dropped still
        holds what it copied, up to its offset, and the moment its primary
        dies (and every link drops) is when a failover needs to know that.
        Only a replica's report turns it on: a writer needs no flag (see
        `observed`), and a member that calls itself standalone before it
        was given any role holds none of the service's data.

        A replica whose link to its primary is down is not healthy, however
        well it answers: it serves ever older data.
        """
        link_down = report.role is Role.REPLICA and report.link_up is False
        self.healthy = report.healthy and not link_down
        self.serving = report.healthy
        if report.healthy or not self.is_writer:
            self.unhealthy_since = None
        elif self.unhealthy_since is None:
            self.unhealthy_since = anyio.current_time()
        self.offset = report.replication_offset
        if not link_down:
            self.link_down_since = None
        elif self.link_down_since is None:
            self.link_down_since = anyio.current_time()

        self.confirmed = (
            report.healthy
            and report.role is not None
            and report.role is self.actor.role
            and report.epoch >= self.actor.epoch
        )
        if report.role is not Role.REPLICA:
            return

        synced = report.details.get("synced")
        self.synced |= bool(report.link_up) if synced is None else bool(synced)

    def observed(self) -> ObservedMember:
        """The member as the reconciler sees it."""
        alive = self.alive and not self.unresponsive
        return ObservedMember(
            id=self.id,
            number=self.number,
            alive=alive,
            ready=self.ready and alive,
            role=self.actor.role,
            primary=self.actor.primary,
            offset=self.offset,
            synced=self.synced or self.is_writer,
            fenced=self.fenced,
            exit_code=self.exit_code,
            oom_killed=self.oom_killed,
            link_down_for=self.link_down_for(),
            extra=self.extra,
            epoch=self.actor.epoch,
            confirmed=self.confirmed and alive,
            serving=self.serving,
            engine=self.engine,
        )

    def link_down_for(self) -> float:
        """Seconds its link to the primary has been reported down; 0 while up."""
        since = self.link_down_since
        return 0.0 if since is None else anyio.current_time() - since


@define(eq=False)
class MemberSpawner:
    """Creates, restarts and removes member containers and their actors.

    Each member's container lives on the engine the member was placed on,
    and its actor runs hooks through that engine's runtime.

    Args:
        engines: The runtime of each engine, by name.
        actors: Starts actors in the supervisor's task group.
    """

    engines: Mapping[str, ContainerRuntime]
    actors: ActorSpawner
    # Where member actors' crash notices go; None logs them instead. The
    # service controller sets it before it spawns a member.
    parent: ActorRef[ChildCrashed] | None = None
    # Receives messages member actors could not handle, with the reason.
    on_dead_letter: Callable[[str, object, str], object] | None = None
    # Engine name -> the address other engines' containers reach ports
    # published on it at; engines without one are absent.
    peer_addresses: Mapping[str, str] = field(factory=dict)

    async def create(
        self,
        spec: ServiceSpec,
        plan: Plan,
        convention: HookConvention,
        member_id: str,
        number: int,
        *,
        origin: tuple[int, int, Role | None] | None = None,
        extra: Role | None = None,
        engine: str = DEFAULT_ENGINE,
    ) -> Member:
        """Create and start a member's container and spawn its actor.

        ``origin`` (generation, epoch, role at creation) goes into its
        labels; see ``_naming``. ``extra`` is the role of an extra member;
        ``None`` for a member of the topology. ``engine`` is where it goes.
        """
        runtime = self.engines[engine]
        labels = member_labels(
            spec.name,
            member_id,
            number,
            spec.labels,
            origin=origin,
            extra_role=extra,
            engine=engine,
        )
        # Networks are per engine: each engine's members share their own.
        await runtime.create_network(
            network_name(spec.name), labels=service_labels(spec.name, spec.labels)
        )
        mounts = volume_mounts(member_id, plan.data_paths)
        for volume in mounts:
            await runtime.create_volume(volume, labels=labels)

        info = await runtime.create_container(
            self._container_spec(spec, plan, member_id, labels, engine)
        )
        await runtime.start_container(info.id)
        info = await runtime.inspect_container(info.id)
        actor = ContainerActor(
            runtime=runtime,
            container_id=info.id,
            member_id=member_id,
            convention=convention,
            on_dead_letter=self._dead_letters(member_id),
        )
        ref = await self._spawn(actor)

        return Member(
            id=member_id,
            number=number,
            name=info.name,
            container_id=info.id,
            actor=actor,
            ref=ref,
            volumes=tuple(mounts),
            labels=labels,
            host_ports=dict(info.host_ports),
            peer_ports=dict(info.peer_ports),
            extra=extra,
            engine=engine,
        )

    async def adopt(
        self,
        info: ContainerInfo,
        plan: Plan,
        convention: HookConvention,
        *,
        member_id: str,
        number: int,
        role: Role | None,
        primary: str | None,
        epoch: int,
        engine: str = DEFAULT_ENGINE,
    ) -> Member:
        """Take on a container an earlier control plane created.

        Nothing runs in it: the actor starts at phase CREATED with the role
        the journal kept; the caller asks ``status`` what holds now.
        ``engine`` is the engine it was listed on.
        """
        actor = ContainerActor(
            runtime=self.engines[engine],
            container_id=info.id,
            member_id=member_id,
            convention=convention,
            role=role,
            primary=primary,
            epoch=epoch,
            plan=plan,
            on_dead_letter=self._dead_letters(member_id),
        )
        ref = await self._spawn(actor)

        return Member(
            id=member_id,
            number=number,
            name=info.name,
            container_id=info.id,
            actor=actor,
            ref=ref,
            volumes=tuple(volume_mounts(member_id, plan.data_paths)),
            labels=dict(info.labels),
            host_ports=dict(info.host_ports),
            peer_ports=dict(info.peer_ports),
            extra=_extra_role(info.labels),
            engine=engine,
        )

    async def respawn(self, member: Member) -> None:
        """Give a member a new actor in place of one that has ended.

        The new actor knows the role, primary and epoch the old one last
        applied, so a writer stays a writer (and is fenced, not forgotten,
        if it is lost), but it starts at phase CREATED: nothing says what
        the old actor's last hook left behind, so the member is prepared
        again, which idempotent hooks allow.
        """
        old = member.actor
        actor = ContainerActor(
            runtime=self.engines[member.engine],
            container_id=member.container_id,
            member_id=member.id,
            convention=old.convention,
            role=old.role,
            primary=old.primary,
            epoch=old.epoch,
            plan=old.plan,
            on_dead_letter=self._dead_letters(member.id),
        )
        member.ref = await self._spawn(actor)
        member.actor = actor

    async def restart(self, spec: ServiceSpec, plan: Plan, member: Member) -> None:
        """Start a member's container again, recreating it if it vanished.

        A container that still runs (it stopped answering, or a strategy
        restarts it with another member) is killed first. The volume
        outlives the container, so a recreated container finds the
        member's data where it left it.
        """
        runtime = self.engines[member.engine]
        if member.missing:
            labels = member.labels or member_labels(
                spec.name,
                member.id,
                member.number,
                spec.labels,
                extra_role=member.extra,
                engine=member.engine,
            )
            info = await runtime.create_container(
                self._container_spec(spec, plan, member.id, labels, member.engine)
            )
            member.container_id = info.id
            member.actor.container_id = info.id
            member.missing = False

        with contextlib.suppress(ContainerGoneError):
            info = await runtime.inspect_container(member.container_id)
            if info.state in _LIVE_STATES:
                await runtime.kill_container(member.container_id)

        await runtime.start_container(member.container_id)
        info = await runtime.inspect_container(member.container_id)
        member.host_ports = dict(info.host_ports)
        member.peer_ports = dict(info.peer_ports)

    async def remove(self, member: Member) -> None:
        """Remove a member's container, stop its actor, remove its volumes."""
        # The container goes first: that ends a hook still running in it,
        # which the actor would otherwise finish before it stops.
        runtime = self.engines[member.engine]
        with contextlib.suppress(ContainerGoneError):  # gone: goal reached
            await runtime.remove_container(member.container_id)

        await member.ref.stop(drain=False)

        for volume in member.volumes:
            await runtime.remove_volume(volume)

    async def _spawn(self, actor: ContainerActor) -> ActorRef[ContainerMessage]:
        return await self.actors.spawn(
            actor,
            name=f"member:{actor.member_id}",
            capacity=MAILBOX_CAPACITY,
            overflow=OverflowPolicy.REJECT,
            parent=self.parent,
        )

    def _dead_letters(self, member_id: str) -> Callable[[object, str], None] | None:
        receive = self.on_dead_letter
        if receive is None:
            return None

        def dead_letter(message: object, reason: str) -> None:
            receive(member_id, message, reason)

        return dead_letter

    def _container_spec(
        self,
        spec: ServiceSpec,
        plan: Plan,
        member_id: str,
        labels: dict[str, str],
        engine: str,
    ) -> ContainerSpec:
        # Members on other engines reach this one's ports at the engine's
        # peer address; an engine without one is reached on its own only.
        return ContainerSpec(
            name=container_name(member_id),
            image=spec.image,
            labels=labels,
            network=network_name(spec.name),
            network_aliases=(member_id,),
            volumes=volume_mounts(member_id, plan.data_paths),
            published_ports=plan.ports,
            memory_limit=spec.memory_limit,
            peer_address=self.peer_addresses.get(engine),
        )


def _extra_role(labels: Mapping[str, str]) -> Role | None:
    """The role an extra member was made for, from its container's labels."""
    value = labels.get(LABEL_EXTRA)
    try:
        return Role(value) if value else None
    except ValueError:
        return None  # a label this version does not know: a topology member

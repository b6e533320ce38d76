"""What the supervisor reports: status snapshots and timeline events."""

from __future__ import annotations

from attrs import field, frozen

from rolecall.hooks_protocol import Role, Topology

__all__ = ["MemberView", "ServiceEvent", "ServiceStatus"]


@frozen
class MemberView:
    """One member as ``status`` shows it.

    Attributes:
        id: Member id.
        role: The role last applied; ``None`` before any.
        alive: Whether its container runs.
        ready: Whether its hooks prepared it since the container started.
        healthy: Whether its last ``status`` said so.
        offset: Replication offset from its last ``status``.
        epoch: Epoch of the last role it applied.
        container_id: The engine's container id.
        container_name: The container's name.
        address: ``host:port`` other members use to reach it.
        published: ``127.0.0.1:port`` at which the host reaches it, if any.
        following: For a replica: the member it follows.
        extra: For an extra member (see ``ServiceSpec.extras``): the role
            it was created to take; ``None`` for the topology's members.
        engine: The engine its container runs on, by name.
    """

    id: str
    role: Role | None
    alive: bool
    ready: bool
    healthy: bool
    offset: int
    epoch: int
    container_id: str
    container_name: str
    address: str
    published: str | None = None
    following: str | None = None
    extra: Role | None = None
    engine: str = "default"


@frozen
class ServiceStatus:
    """A snapshot of one service.

    Attributes:
        name: The service's name.
        image: Its image.
        topology: The desired topology.
        replicas: Desired replicas (redundant topology).
        converged: Whether the last pass found nothing to do.
        epoch: The highest epoch handed out.
        primary: The member taking writes, if any.
        members: Every member, oldest first.
        last_error: The error that ended the last failed pass, if any.
        failover_paused: Whether promoting a replica is paused for it.
        failure: Why supervision gave up on the service (too many restarts,
            see `Supervision`, or another control plane's claim on it);
            ``None`` while it has not. Applying a spec again clears it.
        dead_letters: Messages its member actors could not handle so far.
        engine: The engine new members go to (after a move, the target).
        moving: While a move runs: the engine it goes to, the way and the
            phase (``to engine2 by replication: grow``); ``None`` otherwise.
    """

    name: str
    image: str
    topology: Topology
    replicas: int
    converged: bool
    epoch: int
    primary: str | None
    members: tuple[MemberView, ...] = ()
    last_error: str | None = None
    failover_paused: bool = False
    failure: str | None = None
    dead_letters: int = 0
    engine: str = "default"
    moving: str | None = None

    def member(self, member_id: str) -> MemberView:
        """The view of one member.

        Raises:
            KeyError: No member has that id.
        """
        for member in self.members:
            if member.id == member_id:
                return member

        raise KeyError(member_id)

    @property
    def writer(self) -> MemberView | None:
        """The member that takes writes, if one does."""
        if self.primary is None:
            return None

        return self.member(self.primary)


@frozen
class ServiceEvent:
    """One line of the timeline: what rolecall did or saw, and how long it took.

    Attributes:
        time: Wall-clock time, seconds since the epoch.
        service: The service concerned.
        kind: Stable event name: ``member_adopted`` (a container an
            earlier control plane left, taken on), ``member_created``,
            ``member_prepared``,
            ``role_applied``, ``member_lost`` (its ``cause`` field says
            ``exited``, ``killed``, ``crashed``, ``oom`` or
            ``removed``),
            ``member_unresponsive``, ``member_fenced``, ``member_restarted``,
            ``member_held`` (left down by its restart kind),
            ``restart_delayed``, ``actor_replaced``, ``member_removed``,
            ``failover`` (another member took over writes),
            ``writer_restarted`` (the lost writer took writes again in
            place), ``candidates_probed`` (the replicas' positions asked
            for at failover time), ``failover_withheld``, ``switchover``, ``converged``,
            ``degraded``, ``step_failed``, ``steps_interrupted``,
            ``pass_crashed``,
            ``service_failed`` (given up: too many restarts, or another
            control plane claims the service), ``service_taken_over``
            (the claim moved here from the control plane its fields
            name).
        member: The member concerned, if one is.
        detail: A short human-readable description.
        duration: Seconds the action took, when it is an action.
        fields: Extra structured values.
    """

    time: float
    service: str
    kind: str
    member: str | None = None
    detail: str = ""
    duration: float | None = None
    fields: dict[str, object] = field(factory=dict)

"""What the reconciler reads and writes: observed members and the steps.

Plain frozen records: a plan is data, compared in tests and shown in logs.
`supervisor._reconciler` turns observed members into steps.
"""

from __future__ import annotations

from attrs import frozen

from rolecall.hooks_protocol import Role

__all__ = [
    "ApplyRole",
    "CreateMember",
    "FenceMember",
    "ObservedMember",
    "PrepareMember",
    "RemoveMember",
    "RestartMember",
    "Step",
]

_WRITER_ROLES = frozenset({Role.STANDALONE, Role.PRIMARY})


@frozen
class ObservedMember:
    """One member as the controller last saw it.

    Attributes:
        id: Member id (``cache-2``).
        number: The member's ordinal within the service; ids are never
            reused, so it also orders members by age.
        alive: Whether its container runs.
        ready: Whether ``plan``, ``configure`` and ``start`` succeeded since
            its container last started.
        role: The role last applied with success; ``None`` before any.
        primary: For a replica: the member it follows.
        offset: Replication offset from its last ``status``.
        synced: Whether it holds the service's data (a replica that
            completed a sync, or any writer).
        fenced: Whether its container was killed on purpose to keep it from
            taking writes.
        exit_code: How its container last ended, when it is down; ``None``
            while it runs, or when it stopped answering instead.
        oom_killed: Whether its container was last killed for memory.
        extra: The role it was created to take beside the topology (see
            ``ServiceSpec.extras``); ``None`` for the topology's members.
        epoch: The epoch of the last role it applied.
        confirmed: Whether its last ``status``, taken after its last role
            command, reported that role and healthy.
        link_down_for: Seconds its ``status`` has reported its link to the
            primary down; 0 while up. Past the service's
            ``unresponsive_after`` the replica is told its role again.
        recycle: Whether its running container is to be restarted because
            another member was (the ``one_for_all`` and ``rest_for_one``
            strategies); set by the planner, not by observation.
        serving: Whether its last ``status`` said its service answers
            (``healthy``, whatever its link): a replica whose server died
            is never promoted.
        engine: The engine its container runs on; of members otherwise
            alike, those on the spec's engine are kept first.
    """

    id: str
    number: int
    alive: bool
    ready: bool = False
    role: Role | None = None
    primary: str | None = None
    offset: int = 0
    synced: bool = False
    fenced: bool = False
    exit_code: int | None = None
    oom_killed: bool = False
    extra: Role | None = None
    epoch: int = 0
    confirmed: bool = False
    link_down_for: float = 0.0
    recycle: bool = False
    serving: bool = True
    engine: str = "default"

    @property
    def is_writer(self) -> bool:
        """Whether the member was last told to take writes."""
        return self.role in _WRITER_ROLES

    @property
    def clean_exit(self) -> bool:
        """Whether its container ended by itself with code 0."""
        return self.exit_code == 0 and not self.oom_killed


@frozen
class CreateMember:
    """Create a new member's volume and container, then prepare it.

    ``extra`` is the role of an extra member (see ``ServiceSpec.extras``);
    ``None`` for a member of the topology. ``engine`` is where it goes.
    """

    member: str
    extra: Role | None = None
    engine: str = "default"


@frozen
class RestartMember:
    """Start a member's container again, then prepare it.

    A container that still runs (a member that stopped answering, or one a
    strategy restarts with another) is killed first.
    """

    member: str


@frozen
class PrepareMember:
    """Run ``plan``, ``configure`` and ``start`` in a running container."""

    member: str


@frozen
class ApplyRole:
    """Tell a member to take a role (``primary`` names whom to follow)."""

    member: str
    role: Role
    primary: str | None = None


@frozen
class FenceMember:
    """Kill a lost writer's container and keep it down before a promotion."""

    member: str


@frozen
class RemoveMember:
    """Stop a member's service, remove its container and its volume."""

    member: str


Step = (
    CreateMember
    | RestartMember
    | PrepareMember
    | ApplyRole
    | FenceMember
    | RemoveMember
)

"""The reconciler's rules, on records alone."""

from __future__ import annotations

from rolecall.hooks_protocol import Role, Topology
from rolecall.supervisor._reconciler import (
    ApplyRole,
    CreateMember,
    FenceMember,
    ObservedMember,
    PrepareMember,
    RemoveMember,
    RestartMember,
    choose_primary,
    plan_steps,
)
from rolecall.supervisor._spec import ServiceSpec

STANDALONE = ServiceSpec(name="cache", image="img", topology=Topology.STANDALONE)
REDUNDANT = ServiceSpec(name="cache", image="img", topology=Topology.REDUNDANT)


def member(
    number: int,
    role: Role | None,
    *,
    alive: bool = True,
    ready: bool = True,
    primary: str | None = None,
    offset: int = 0,
    synced: bool = True,
    fenced: bool = False,
) -> ObservedMember:
    return ObservedMember(
        id=f"cache-{number}",
        number=number,
        alive=alive,
        ready=ready,
        role=role,
        primary=primary,
        offset=offset,
        synced=synced,
        fenced=fenced,
    )


def test_empty_standalone_creates_one_member_and_sets_its_role() -> None:
    """An empty standalone service gets one new member told to be standalone."""
    assert plan_steps(STANDALONE, [], next_number=1) == [
        CreateMember("cache-1"),
        ApplyRole("cache-1", Role.STANDALONE),
    ]


def test_converged_standalone_plans_nothing() -> None:
    """A running, ready standalone member needs no step."""
    members = [member(1, Role.STANDALONE)]

    assert plan_steps(STANDALONE, members, next_number=2) == []


def test_standalone_to_redundant_promotes_in_place_then_adds_a_replica() -> None:
    """The existing node becomes primary in place and a new replica follows it."""
    members = [member(1, Role.STANDALONE)]

    assert plan_steps(REDUNDANT, members, next_number=2) == [
        ApplyRole("cache-1", Role.PRIMARY),
        CreateMember("cache-2"),
        ApplyRole("cache-2", Role.REPLICA, "cache-1"),
    ]


def test_replica_count_is_configurable() -> None:
    """Two replicas are created when the spec asks for two."""
    spec = ServiceSpec(
        name="cache", image="img", topology=Topology.REDUNDANT, replicas=2
    )
    members = [member(1, Role.PRIMARY)]

    steps = plan_steps(spec, members, next_number=2)

    assert steps == [
        CreateMember("cache-2"),
        ApplyRole("cache-2", Role.REPLICA, "cache-1"),
        CreateMember("cache-3"),
        ApplyRole("cache-3", Role.REPLICA, "cache-1"),
    ]


def test_converged_redundant_plans_nothing() -> None:
    """A primary with its one ready replica needs no step."""
    members = [
        member(1, Role.PRIMARY),
        member(2, Role.REPLICA, primary="cache-1"),
    ]

    assert plan_steps(REDUNDANT, members, next_number=3) == []


def test_lost_primary_is_fenced_before_the_best_replica_is_promoted() -> None:
    """Failover fences the dead primary, promotes, removes it, adds a replica."""
    members = [
        member(1, Role.PRIMARY, alive=False),
        member(2, Role.REPLICA, primary="cache-1", offset=90),
        member(3, Role.REPLICA, primary="cache-1", offset=120),
    ]

    steps = plan_steps(REDUNDANT, members, next_number=4)

    assert steps[:2] == [
        FenceMember("cache-1"),
        ApplyRole("cache-3", Role.PRIMARY),
    ]
    assert RemoveMember("cache-1") in steps
    assert ApplyRole("cache-2", Role.REPLICA, "cache-3") in steps


def test_failover_with_one_replica_replaces_the_lost_member() -> None:
    """With replicas=1 the promoted replica gets a new replica of its own."""
    members = [
        member(1, Role.PRIMARY, alive=False),
        member(2, Role.REPLICA, primary="cache-1", offset=5),
    ]

    assert plan_steps(REDUNDANT, members, next_number=3) == [
        FenceMember("cache-1"),
        ApplyRole("cache-2", Role.PRIMARY),
        RemoveMember("cache-1"),
        CreateMember("cache-3"),
        ApplyRole("cache-3", Role.REPLICA, "cache-2"),
    ]


def test_a_fenced_writer_is_not_fenced_twice() -> None:
    """A writer already fenced is only removed on the next pass."""
    members = [
        member(1, Role.PRIMARY, alive=False, fenced=True),
        member(2, Role.REPLICA, primary="cache-1", offset=5),
    ]

    steps = plan_steps(REDUNDANT, members, next_number=3)

    assert FenceMember("cache-1") not in steps
    assert steps[0] == ApplyRole("cache-2", Role.PRIMARY)


def test_an_empty_replica_is_never_promoted() -> None:
    """A replica that never synced loses to a lagging one that did."""
    members = [
        member(1, Role.PRIMARY, alive=False),
        member(2, Role.REPLICA, primary="cache-1", offset=0, synced=False),
        member(3, Role.REPLICA, primary="cache-1", offset=40),
    ]

    assert choose_primary(members) == members[2]


def test_with_no_synced_replica_the_lost_writer_is_restarted_in_place() -> None:
    """The dead writer's volume holds the only data, so it comes back."""
    members = [
        member(1, Role.PRIMARY, alive=False),
        member(2, Role.REPLICA, primary="cache-1", synced=False),
    ]

    steps = plan_steps(REDUNDANT, members, next_number=3)

    assert steps[:2] == [
        RestartMember("cache-1"),
        ApplyRole("cache-1", Role.PRIMARY),
    ]


def test_dead_standalone_is_restarted_in_place() -> None:
    """A standalone member whose container died comes back with its volume."""
    members = [member(1, Role.STANDALONE, alive=False)]

    assert plan_steps(STANDALONE, members, next_number=2) == [
        RestartMember("cache-1"),
        ApplyRole("cache-1", Role.STANDALONE),
    ]


def test_dead_replica_is_restarted_and_told_to_follow_again() -> None:
    """A replica whose container died is restarted rather than replaced."""
    members = [
        member(1, Role.PRIMARY),
        member(2, Role.REPLICA, primary="cache-1", alive=False),
    ]

    assert plan_steps(REDUNDANT, members, next_number=3) == [
        RestartMember("cache-2"),
        ApplyRole("cache-2", Role.REPLICA, "cache-1"),
    ]


def test_unprepared_member_is_prepared_before_its_role() -> None:
    """A running container whose hooks never ran is prepared first."""
    members = [member(1, None, ready=False)]

    assert plan_steps(STANDALONE, members, next_number=2) == [
        PrepareMember("cache-1"),
        ApplyRole("cache-1", Role.STANDALONE),
    ]


def test_redundant_to_standalone_keeps_the_primary_and_removes_the_rest() -> None:
    """Converting back keeps the primary's data and removes every replica."""
    members = [
        member(1, Role.REPLICA, primary="cache-2"),
        member(2, Role.PRIMARY),
        member(3, Role.REPLICA, primary="cache-2"),
    ]

    assert plan_steps(STANDALONE, members, next_number=4) == [
        ApplyRole("cache-2", Role.STANDALONE),
        RemoveMember("cache-1"),
        RemoveMember("cache-3"),
    ]


def test_two_writers_leave_one_the_primary_is_kept() -> None:
    """When two members take writes, the primary stays and the other goes."""
    members = [
        member(1, Role.STANDALONE),
        member(2, Role.PRIMARY),
    ]

    steps = plan_steps(REDUNDANT, members, next_number=3)

    assert steps[0] == RemoveMember("cache-1")
    assert ApplyRole("cache-3", Role.REPLICA, "cache-2") in steps


def test_surplus_replicas_are_removed() -> None:
    """Replicas past the spec's count are removed, the oldest kept."""
    members = [
        member(1, Role.PRIMARY),
        member(2, Role.REPLICA, primary="cache-1"),
        member(3, Role.REPLICA, primary="cache-1"),
    ]

    assert plan_steps(REDUNDANT, members, next_number=4) == [RemoveMember("cache-3")]

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
    epoch: int = 0,
    extra: Role | None = None,
    confirmed: bool = True,
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
        epoch=epoch,
        extra=extra,
        confirmed=confirmed,
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
    """Failover fences the dead primary, promotes the replica furthest ahead,
    and keeps the old primary, with no place left for it, until the new one
    confirmed its role."""
    members = [
        member(1, Role.PRIMARY, alive=False),
        member(2, Role.REPLICA, primary="cache-1", offset=90),
        member(3, Role.REPLICA, primary="cache-1", offset=120),
    ]

    steps = plan_steps(REDUNDANT, members, next_number=4)

    assert steps == [
        FenceMember("cache-1"),
        ApplyRole("cache-3", Role.PRIMARY),
        ApplyRole("cache-2", Role.REPLICA, "cache-3"),
    ]


def test_a_superseded_writer_without_a_place_goes_once_the_takeover_holds() -> None:
    """The fenced old primary is removed only after the new primary confirmed
    its role in a status."""
    members = [
        member(1, Role.PRIMARY, alive=False, fenced=True, epoch=3),
        member(2, Role.REPLICA, primary="cache-3", epoch=5),
        member(3, Role.PRIMARY, epoch=4, confirmed=False),
    ]
    confirmed = [*members[:2], member(3, Role.PRIMARY, epoch=4)]

    assert plan_steps(REDUNDANT, members, next_number=4) == []
    assert plan_steps(REDUNDANT, confirmed, next_number=4) == [RemoveMember("cache-1")]


def test_failover_with_one_replica_brings_the_old_primary_back_to_follow() -> None:
    """With replicas=1 the fenced old primary is restarted and follows the
    promoted replica, instead of being replaced by an empty member."""
    members = [
        member(1, Role.PRIMARY, alive=False),
        member(2, Role.REPLICA, primary="cache-1", offset=5),
    ]

    assert plan_steps(REDUNDANT, members, next_number=3) == [
        FenceMember("cache-1"),
        ApplyRole("cache-2", Role.PRIMARY),
        RestartMember("cache-1"),
        ApplyRole("cache-1", Role.REPLICA, "cache-2"),
    ]


def test_a_superseded_writer_back_up_is_never_the_writer() -> None:
    """An old primary whose container runs again follows the primary with
    the newer epoch, however far ahead its own offset was."""
    members = [
        member(1, Role.PRIMARY, ready=False, offset=500, epoch=3, fenced=True),
        member(2, Role.PRIMARY, offset=10, epoch=4),
    ]

    assert plan_steps(REDUNDANT, members, next_number=3) == [
        PrepareMember("cache-1"),
        ApplyRole("cache-1", Role.REPLICA, "cache-2"),
    ]


def test_a_superseded_writer_is_not_lost_again_when_the_new_one_dies() -> None:
    """When the newest writer is lost, a replica is promoted, and the older
    writer is neither fenced again nor chosen."""
    members = [
        member(1, Role.PRIMARY, alive=False, fenced=True, epoch=3),
        member(2, Role.PRIMARY, alive=False, epoch=4),
        member(3, Role.REPLICA, primary="cache-2", offset=7, epoch=4),
    ]

    steps = plan_steps(REDUNDANT, members, next_number=4)

    assert steps[:2] == [FenceMember("cache-2"), ApplyRole("cache-3", Role.PRIMARY)]
    assert FenceMember("cache-1") not in steps


def test_a_replica_passed_over_at_failover_time_loses_to_one_that_answered() -> None:
    """A candidate that did not answer its fresh status is not promoted while
    another one answered, even with a higher offset on record."""
    members = [
        member(1, Role.PRIMARY, alive=False),
        member(2, Role.REPLICA, primary="cache-1", offset=90),
        member(3, Role.REPLICA, primary="cache-1", offset=120),
    ]

    picked = choose_primary(members, passed_over={"cache-3"})
    nobody_answered = choose_primary(members, passed_over={"cache-2", "cache-3"})

    assert picked == members[1]
    assert nobody_answered == members[2]


def test_extra_members_follow_the_writer_in_their_own_role() -> None:
    """A backup extra is created beside a standalone writer and told to
    follow it as a backup node."""
    spec = ServiceSpec(name="cache", image="img", extras={"backup": 1})

    assert plan_steps(spec, [member(1, Role.STANDALONE)], next_number=2) == [
        CreateMember("cache-2", Role.BACKUP),
        ApplyRole("cache-2", Role.BACKUP, "cache-1"),
    ]


def test_extra_members_are_never_promoted_nor_replicas() -> None:
    """A lost primary with only a backup extra beside its replica: the
    replica is promoted, the backup follows it, a new replica is made."""
    spec = ServiceSpec(
        name="cache", image="img", topology="redundant", extras={"backup": 1}
    )
    members = [
        member(1, Role.PRIMARY, alive=False, fenced=True, epoch=2),
        member(2, Role.REPLICA, primary="cache-1", offset=5, epoch=2),
        member(3, Role.BACKUP, primary="cache-1", offset=9, extra=Role.BACKUP),
    ]

    assert plan_steps(spec, members, next_number=4) == [
        ApplyRole("cache-2", Role.PRIMARY),
        RestartMember("cache-1"),
        ApplyRole("cache-1", Role.REPLICA, "cache-2"),
        ApplyRole("cache-3", Role.BACKUP, "cache-2"),
    ]


def test_lost_extra_members_come_back_and_unwanted_ones_go() -> None:
    """A dead extra is restarted in place; extras past the count go."""
    one = ServiceSpec(name="cache", image="img", extras={"backup": 1})
    none = ServiceSpec(name="cache", image="img")
    members = [
        member(1, Role.STANDALONE),
        member(2, Role.BACKUP, primary="cache-1", alive=False, extra=Role.BACKUP),
        member(3, Role.BACKUP, primary="cache-1", extra=Role.BACKUP),
    ]

    assert plan_steps(one, members, next_number=4) == [
        RemoveMember("cache-3"),
        RestartMember("cache-2"),
        ApplyRole("cache-2", Role.BACKUP, "cache-1"),
    ]
    assert plan_steps(none, members, next_number=4) == [
        RemoveMember("cache-2"),
        RemoveMember("cache-3"),
    ]


def test_an_extra_member_without_a_role_never_takes_writes() -> None:
    """An extra that died before its first role is no writer candidate: an
    empty service gets a member of its own."""
    spec = ServiceSpec(name="cache", image="img", extras={"backup": 1})
    members = [member(1, None, alive=False, ready=False, extra=Role.BACKUP)]

    assert plan_steps(spec, members, next_number=2) == [
        CreateMember("cache-2"),
        ApplyRole("cache-2", Role.STANDALONE),
        RestartMember("cache-1"),
        ApplyRole("cache-1", Role.BACKUP, "cache-2"),
    ]


def test_a_fenced_writer_is_not_fenced_twice() -> None:
    """A writer already fenced is not killed again: the replica is promoted."""
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
    """When two members take writes under one epoch, the primary stays and
    the other follows it; under two epochs the newer one stays."""
    members = [
        member(1, Role.STANDALONE),
        member(2, Role.PRIMARY),
    ]
    newer = [member(1, Role.STANDALONE, epoch=6), member(2, Role.PRIMARY, epoch=5)]

    assert plan_steps(REDUNDANT, members, next_number=3) == [
        ApplyRole("cache-1", Role.REPLICA, "cache-2")
    ]
    assert plan_steps(REDUNDANT, newer, next_number=3) == [
        ApplyRole("cache-1", Role.PRIMARY),
        ApplyRole("cache-2", Role.REPLICA, "cache-1"),
    ]


def test_surplus_replicas_are_removed() -> None:
    """Replicas past the spec's count are removed, the oldest kept."""
    members = [
        member(1, Role.PRIMARY),
        member(2, Role.REPLICA, primary="cache-1"),
        member(3, Role.REPLICA, primary="cache-1"),
    ]

    assert plan_steps(REDUNDANT, members, next_number=4) == [RemoveMember("cache-3")]

"""Adoption: a controller takes on the containers an earlier one left.

Before its first pass plans anything, a controller lists the service's
containers by their labels and rebuilds one member and one container actor
per container, without running ``plan``, ``configure``, ``start`` or
``role`` in them:

- a running container is asked ``status``: the role and epoch it reports
  are the truth; whom a replica follows comes from the journal when the
  journal's last role command to it is the one it reports (else the next
  pass tells it again, which a replica takes as a repeat);
- a container that is down cannot be asked: the journal says what it was.
  Without a record of it, it counts as a writer, the safe reading: it is
  never started beside another writer, and it is started in place when it
  may hold the only copy of the data;
- two or more members down that no record knows, and none of the service
  running (a lost journal, or a new state directory, after every member
  stopped): any of them may hold the newest data, and nothing on the
  engine says which. Starting one as the writer would have the others
  resync over their data (a Redis replica loads its primary's dataset; a
  PostgreSQL standby is rewound), and a standalone service would remove
  them. So nothing is adopted, started or removed: adoption raises
  `WriterUnknownError`, listing them and saying how to choose, and tries
  again each pass (after the pass backoff) until one is chosen;
- numbering continues after the highest number found, and the epoch after
  the highest of the journal's and the members';
- the step under way when the earlier control plane stopped is finished or
  undone by the passes that follow, as any difference between desired and
  observed state is; what adoption undoes itself is what no pass can see:
  the volumes of a member whose creation or removal was cut short before
  or after its container existed.

Every adopted member gets a ``member_adopted`` event. The first pass that
may act then runs ``configure`` once on every running adopted member with
the spec it is adopted under (see ``_configuring``): what an earlier
control plane configured it with is known nowhere.
"""

from __future__ import annotations

import re

import anyio
import structlog
from attrs import evolve

from rolecall.actors import ContainerInfo, MemberPhase
from rolecall.hooks_protocol import Role, RolecallError, SpecError, WriterUnknownError

from ._members import Member
from ._naming import (
    LABEL_MANAGED,
    LABEL_MEMBER,
    LABEL_NUMBER,
    LABEL_SERVICE,
    volume_mounts,
)
from ._observing import is_running
from ._service_record import MemberRecord, ServiceRecord
from ._switchover import Switching
from ._unknown_writer import refuse_to_guess

__all__ = ["Adopting"]

_log = structlog.get_logger("rolecall.supervisor")
_VOLUME_NUMBER = re.compile(r"(\d+)-data\d*")  # after "rolecall-<service>-"


class Adopting(Switching):
    """The adopting part of a `ServiceController`."""

    __slots__ = ()

    async def survey(self) -> list[tuple[ContainerInfo, str]]:
        """The service's containers, each with its engine, checked against
        the spec; reads only, so it may run before the claim is held.

        Raises:
            SpecError: They run another image than the spec names.
            RolecallError: The engine could not list them.
        """
        listed = await self._list_everywhere(self.journaled)
        others = sorted({info.image for info, _ in listed} - {self.spec.image})
        if others:
            raise SpecError(
                f"service {self.spec.name!r} has containers of image"
                f" {', '.join(others)} on the engine and its spec names"
                f" {self.spec.image!r}: changing the image of a running service"
                " is not supported: put the image back in the spec, or take"
                f" the service down first (`rolecall down {self.spec.name}`)",
                service=self.spec.name,
            )

        return listed

    async def adopt(
        self, listed: list[tuple[ContainerInfo, str]] | None = None
    ) -> None:
        """Take on the service's containers; see the module docs.

        Args:
            listed: What `survey` found, when it ran already.

        Raises:
            SpecError: They run another image than the spec names.
            RolecallError: The engine could not list them; nothing was
                adopted and no step may be planned yet.
        """
        record = self.journaled
        if listed is None:
            listed = await self.survey()
        containers = [info for info, _ in listed]
        engines = {info.id: engine for info, engine in listed}

        found = self._adoptable(containers)
        refuse_to_guess(self.spec.name, found, record)
        if record is None:
            self._settle_where_found(
                {member_id: engines[info.id] for member_id, info in found.items()}
            )
        adopted = [
            await self._adopt(info, member_id, record, engines[info.id])
            for member_id, info in found.items()
            if member_id not in self.members
        ]

        if record is not None:
            self.failover_paused |= record.failover_paused
            self.moving = record.move
            self.epoch = max(self.epoch, record.epoch)
            self.next_number = max(self.next_number, record.next_number)

        for member in adopted:
            self.next_number = max(self.next_number, member.number + 1)
            self.epoch = max(self.epoch, member.actor.epoch)

        if record is None and found:
            # A member whose container was removed by hand may have left
            # its volume: a new member under its number would take it up.
            self.next_number = max(self.next_number, await self._after_volumes())

        await self._sweep_volumes(record)
        self.journaled = None
        self.adopted = True
        self.persist()

    async def _list_everywhere(
        self, record: ServiceRecord | None
    ) -> list[tuple[ContainerInfo, str]]:
        """The service's containers, each with its engine: on the spec's
        engine and every engine the journal places a member or a move on;
        without a journal, on every engine (`_list_unjournaled`).

        Raises:
            RolecallError: One of those engines could not list them: what
                the journal holds of its members must not be lost, so
                nothing is adopted until it answers.
        """
        labels = {LABEL_MANAGED: "true", LABEL_SERVICE: self.spec.name}
        if record is None:
            return await self._list_unjournaled(labels)

        names = [self.spec.engine]
        names += [member.engine for member in record.members.values()]
        if record.move is not None:
            names += [record.move.source, record.move.target]

        listed = []
        for name in dict.fromkeys(names):
            runtime = self.engines.get(name)
            if runtime is None:
                _log.warning(
                    "engine_unknown",
                    service=self.spec.name,
                    engine=name,
                    reason="the journal places members there and no engine"
                    " has that name now; name it again to adopt them",
                )
                continue

            for info in await runtime.list_containers(labels=labels):
                listed.append((info, name))

        return listed

    async def _list_unjournaled(
        self, labels: dict[str, str]
    ) -> list[tuple[ContainerInfo, str]]:
        """The service's containers on every engine, with no journal to say
        where a move may have put them.

        Known gap: an engine other than the spec's that does not answer is
        passed over (logged), so that a new service can start while some
        engine is away. Without a journal, a service whose members all sit
        on that engine is then taken for new and made afresh on its spec's
        engine. Telling the two apart needs the engine that is away; keep
        the state directory (the journal knows where every member runs).

        Raises:
            RolecallError: The spec's engine could not list them.
        """
        listed = [
            (info, self.spec.engine)
            for info in await self.runtime.list_containers(labels=labels)
        ]
        for name, runtime in self.engines.items():
            if name == self.spec.engine:
                continue

            try:
                found = await runtime.list_containers(labels=labels)
            except RolecallError as error:
                _log.warning(
                    "engine_not_listed",
                    service=self.spec.name,
                    engine=name,
                    error=str(error),
                    reason="no journal says where the service's members run;"
                    " any on that engine are not adopted",
                )
                continue

            listed += [(info, name) for info in found]

        return listed

    def _settle_where_found(self, placement: dict[str, str]) -> None:
        """Without a journal, take the service to live where its members are.

        A spec naming the engine a move left makes new members there, and
        the ones found elsewhere, a writer among them, would be surplus
        beside a second writer. Members on two engines are a move whose
        phase nobody knows: which side holds the newest writes cannot be
        told from here.

        Args:
            placement: The engine of each member found, by member id.

        Raises:
            WriterUnknownError: Members run on more than one engine.
        """
        found_on = set(placement.values())
        if len(found_on) > 1:
            raise WriterUnknownError(
                f"service {self.spec.name!r} has members on engines"
                f" {', '.join(sorted(found_on))} and no journal says which"
                " move was under way: start rolecall with the state"
                " directory that managed it, or remove the members on one"
                " engine by hand (`docker rm`; their volumes stay)",
                service=self.spec.name,
                members=tuple(placement),
            )

        if found_on and found_on != {self.spec.engine}:
            (engine,) = found_on
            _log.warning(
                "service_found_elsewhere",
                service=self.spec.name,
                engine=engine,
                spec_engine=self.spec.engine,
                reason="no journal; its members run there, so it stays there",
            )
            self.source_engine = self.spec.engine
            self.spec = evolve(self.spec, engine=engine)

    def _adoptable(self, containers: list[ContainerInfo]) -> dict[str, ContainerInfo]:
        """The containers to adopt by member id, in number order; those
        with a wrong member or number label are left alone."""
        found = {}
        for info in sorted(containers, key=_number):
            member_id = info.labels.get(LABEL_MEMBER, "")
            if _number(info) < 1 or not member_id.startswith(f"{self.spec.name}-"):
                _log.warning(
                    "container_not_adopted",
                    service=self.spec.name,
                    container=info.name,
                    reason="its member or number label is missing or wrong",
                )
                continue

            found[member_id] = info

        return found

    async def _adopt(
        self,
        info: ContainerInfo,
        member_id: str,
        record: ServiceRecord | None,
        engine: str,
    ) -> Member:
        kept = record.members.get(member_id) if record is not None else None
        role, primary, epoch = _kept_role(kept, running=is_running(info))
        member = await self.spawner.adopt(
            info,
            self.plan,
            self.convention,
            member_id=member_id,
            number=_number(info),
            role=role,
            primary=primary,
            epoch=epoch,
            engine=engine,
        )
        if kept is not None:
            member.fenced, member.synced = kept.fenced, kept.synced
        member.last_answer = anyio.current_time()
        self.members[member_id] = member
        if is_running(info):
            await self._learn(member, record)
        else:
            self.see(member, info)  # lost: reported, and a writer noted lost

        actor = member.actor
        shown = actor.role.value if actor.role is not None else "none"
        self.event(
            "member_adopted",
            member_id,
            f"adopted container {member.name} ({info.state.value}, role"
            f" {shown}, epoch {actor.epoch})",
            role=actor.role.value if actor.role is not None else None,
            epoch=actor.epoch,
            running=is_running(info),
        )

        return member

    async def _learn(self, member: Member, record: ServiceRecord | None) -> None:
        """Ask a running member what it is; keep the journal's word for the
        rest."""
        await self.probe(member)
        actor = member.actor
        report = actor.last_status
        if report is None:
            # No answer: it is prepared again (idempotent) before any role.
            return

        primary = _follows(member.id, report.role, report.epoch, record)
        actor.role = report.role
        actor.epoch = report.epoch
        actor.primary = primary if report.role is Role.REPLICA else None
        # Only a member that serves counts as prepared: a container started
        # again just before the crash holds its role on disk but runs no
        # service until `start` runs (idempotent, so running it again is
        # harmless).
        if report.role is not None and report.healthy:
            actor.phase = MemberPhase.RUNNING

    async def _after_volumes(self) -> int:
        """The number after the highest one a volume of the service names."""
        labels = {LABEL_MANAGED: "true", LABEL_SERVICE: self.spec.name}
        prefix = f"rolecall-{self.spec.name}-"
        numbers = [
            int(found.group(1))
            for volume in await self.runtime.list_volumes(labels=labels)
            if volume.startswith(prefix)
            and (found := _VOLUME_NUMBER.fullmatch(volume.removeprefix(prefix)))
        ]

        return max(numbers, default=0) + 1

    async def _sweep_volumes(self, record: ServiceRecord | None) -> None:
        """Remove volumes a create or removal cut short left; keep the rest.

        Without a record there is nothing to go by, and nothing is listed:
        a service's first start (most of them) costs one listing, not two.
        """
        if record is None:
            return

        labels = {LABEL_MANAGED: "true", LABEL_SERVICE: self.spec.name}
        owned = {
            volume
            for member in self.members.values()
            for volume in volume_mounts(member.id, self.plan.data_paths)
        }
        stray = [
            v for v in await self.runtime.list_volumes(labels=labels) if v not in owned
        ]
        if not stray:
            return

        undone = _unfinished(record)
        removable = {
            volume
            for member_id in undone
            for volume in volume_mounts(member_id, self.plan.data_paths)
        }
        left = []
        for volume in stray:
            if volume in removable:
                await self.runtime.remove_volume(volume)
                _log.info(
                    "volume_removed",
                    service=self.spec.name,
                    volume=volume,
                    reason="its member's creation or removal was cut short",
                )
            else:
                left.append(volume)

        if left:
            _log.warning(
                "volumes_left",
                service=self.spec.name,
                volumes=left,
                reason="no container and no unfinished step of the journal"
                " claims them; they may hold data, so rolecall leaves them",
            )


def _number(info: ContainerInfo) -> int:
    text = info.labels.get(LABEL_NUMBER, "")
    return int(text) if text.isdigit() else 0


def _kept_role(
    kept: MemberRecord | None, *, running: bool
) -> tuple[Role | None, str | None, int]:
    if kept is not None:
        return kept.role, kept.primary, kept.epoch

    # Unknown and down: taken for a writer (see the module docs). A running
    # one says for itself.
    return (None if running else Role.PRIMARY), None, 0


def _follows(
    member_id: str, role: Role | None, epoch: int, record: ServiceRecord | None
) -> str | None:
    """Whom the journal says a member follows under that role and epoch."""
    if record is None or role is not Role.REPLICA:
        return None

    change = record.change
    if (
        change is not None
        and change.step in ("role", "switchover")
        and change.member == member_id
        and (change.role, change.epoch) == (role, epoch)
    ):
        return change.primary

    kept = record.members.get(member_id)
    if kept is not None and (kept.role, kept.epoch) == (role, epoch):
        return kept.primary

    return None


def _unfinished(record: ServiceRecord) -> set[str]:
    """Members whose volumes no container claims and no data needs:
    one being created or removed, or one never given a role."""
    undone = {
        member_id for member_id, member in record.members.items() if member.role is None
    }
    if record.change is not None and record.change.step in ("create", "remove"):
        undone.add(record.change.member)

    return undone

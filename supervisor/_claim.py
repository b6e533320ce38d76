"""The claim: which control plane manages a service, kept on the engine.

Two control planes with different state directories see the same
containers: without a word on the engine, both would adopt a service and,
after a failover, each could make its own writer. Before a controller
adopts or creates anything of a service it claims the service: it creates
a named volume, ``rolecall-claim.<service>`` (no other name rolecall makes
holds a dot, so none can collide with it), labelled with its identity.
Creating a volume of a name the engine has returns the existing one, so
both racers of a race read the one volume the engine made, and exactly one
finds its own id on it. The volume holds no data; its labels are the claim.

- Claimed by us: go on. A claim of ours made by an earlier process (a
  restart on the same state directory) is made again, so its pid and time
  name the process that runs now.
- Claimed by another: `ServiceClaimedError`, naming the other; nothing of
  the service is touched. Only a take-over replaces another's claim:
  remove it, create ours, read it back (of two take-overs racing, the
  later one wins, and the earlier finds out at its next check).
- A controller checks its claim again at every pass; one that finds it
  taken over stops acting on the service.

A claim outlives a normal stop of the control plane (the service runs on,
and the same state directory resumes it). It is dropped, last, when the
service is removed, and when it is released (no longer managed, left
running: gone from the runner's spec file), so another control plane may
take the service up without a take-over.

The claim is kept on the control plane's default engine, wherever the
service's members run: a move to another engine does not carry it, so two
control planes share a service's claim only when they share that default
engine.

Known gap: a pass checks the claim before it acts, not before each step,
so a control plane that loses its claim mid-pass may finish that pass's
steps while the one that took over starts its own; a take-over is for a
control plane that is gone, and the message says to stop it first.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

import structlog
from attrs import frozen

from rolecall.actors import LABEL_PREFIX, ContainerRuntime
from rolecall.hooks_protocol import RolecallError, ServiceClaimedError

from ._identity import ControlPlaneIdentity
from ._naming import LABEL_MANAGED

__all__ = [
    "LABEL_CLAIM",
    "LABEL_CLAIMED_AT",
    "LABEL_OWNER",
    "LABEL_OWNER_HOST",
    "LABEL_OWNER_PID",
    "ClaimOwner",
    "check_claim",
    "claim_name",
    "claim_service",
    "claimed_error",
    "down_remedy",
    "drop_claim",
    "release_claim",
]

_log = structlog.get_logger("rolecall.supervisor")

LABEL_CLAIM = f"{LABEL_PREFIX}.claim"
"""On a claim: the service it claims."""
LABEL_OWNER = f"{LABEL_PREFIX}.owner"
"""On a claim: the id of the control plane that holds it."""
LABEL_OWNER_HOST = f"{LABEL_PREFIX}.owner-host"
LABEL_OWNER_PID = f"{LABEL_PREFIX}.owner-pid"
LABEL_CLAIMED_AT = f"{LABEL_PREFIX}.claimed-at"


@frozen
class ClaimOwner:
    """The control plane a claim names, as its labels say.

    Attributes:
        id: Its id; empty for a volume of that name without one.
        host: The host it ran on when it claimed.
        pid: Its process id then, if the claim says.
        since: When it claimed (UTC, ISO 8601).
    """

    id: str
    host: str
    pid: int | None
    since: str

    @classmethod
    def read(cls, labels: Mapping[str, str]) -> ClaimOwner:
        """The owner a claim's labels name."""
        pid = labels.get(LABEL_OWNER_PID, "")
        return cls(
            id=labels.get(LABEL_OWNER, ""),
            host=labels.get(LABEL_OWNER_HOST, "?"),
            pid=int(pid) if pid.isdigit() else None,
            since=labels.get(LABEL_CLAIMED_AT, "?"),
        )

    @classmethod
    def of(cls, error: ServiceClaimedError) -> ClaimOwner:
        """The owner a refusal names."""
        return cls(id=error.owner, host=error.host, pid=error.pid, since=error.since)

    @property
    def process(self) -> tuple[str, int | None]:
        """Host and process id."""
        return self.host, self.pid

    def describe(self) -> str:
        """``<id> (host H, pid P, since T)``, for messages."""
        return (
            f"{self.id or 'of unknown id'} (host {self.host}, pid"
            f" {self.pid or '?'}, since {self.since})"
        )


def down_remedy(service: str) -> str:
    """What `claimed_error` tells the one taking a service down to do."""
    return (
        f"remove it with `rolecall down {service} --take-over` (embedded:"
        " `Supervisor.remove(name, take_over=True)`)"
    )


def claim_name(service: str) -> str:
    """The name of a service's claim on the engine."""
    return f"rolecall-claim.{service}"


async def claim_service(
    runtime: ContainerRuntime,
    service: str,
    identity: ControlPlaneIdentity,
    *,
    labels: Mapping[str, str],
    take_over: bool = False,
) -> ClaimOwner | None:
    """Claim ``service`` for ``identity``; see the module docs.

    Args:
        runtime: The engine.
        service: The service.
        identity: Who claims it.
        labels: The spec's own labels, carried by the claim as by every
            object of the service.
        take_over: Replace another control plane's claim.

    Returns:
        The control plane whose claim was taken over; ``None`` when none
        was.

    Raises:
        ServiceClaimedError: Another control plane holds the claim (and
            ``take_over`` is not set, or another take-over won).
        EngineError: The engine failed; nothing is claimed.
    """
    name = claim_name(service)
    wanted = _claim_labels(service, identity, labels)
    found = await runtime.create_volume(name, labels=wanted)
    if found.get(LABEL_OWNER) == identity.id:
        if ClaimOwner.read(found).process != (identity.host, identity.pid):
            await _replace(runtime, name, wanted)
            await check_claim(runtime, service, identity, labels=labels)
        return None

    if not take_over:
        raise claimed_error(service, ClaimOwner.read(found))

    await _replace(runtime, name, wanted)
    await check_claim(runtime, service, identity, labels=labels)

    return ClaimOwner.read(found)


async def check_claim(
    runtime: ContainerRuntime,
    service: str,
    identity: ControlPlaneIdentity,
    *,
    labels: Mapping[str, str],
) -> None:
    """Make sure ``identity`` still holds the claim; claim it if none does.

    Raises:
        ServiceClaimedError: Another control plane holds it now.
        EngineError: The engine failed.
    """
    found = await runtime.volume_labels(claim_name(service))
    if found is None:
        # Gone (removed by hand, or by a take-down elsewhere): the desired
        # state is still ours to realise, so claim it again.
        found = await runtime.create_volume(
            claim_name(service), labels=_claim_labels(service, identity, labels)
        )

    if found.get(LABEL_OWNER) != identity.id:
        raise claimed_error(service, ClaimOwner.read(found))


async def drop_claim(runtime: ContainerRuntime, service: str) -> None:
    """Remove a service's claim, whoever holds it; gone is not an error."""
    await runtime.remove_volume(claim_name(service))


async def release_claim(
    runtime: ContainerRuntime, service: str, identity: ControlPlaneIdentity
) -> None:
    """Remove a service's claim if ``identity`` holds it; leave another's.

    An engine that fails is logged (``claim_not_released``), not raised: a
    claim left behind only makes another control plane take over.
    """
    try:
        found = await runtime.volume_labels(claim_name(service))
        if found is not None and found.get(LABEL_OWNER) == identity.id:
            await drop_claim(runtime, service)
    except RolecallError as error:
        _log.warning("claim_not_released", service=service, error=str(error))


async def _replace(
    runtime: ContainerRuntime, name: str, labels: Mapping[str, str]
) -> None:
    await runtime.remove_volume(name)
    await runtime.create_volume(name, labels=labels)


def _claim_labels(
    service: str, identity: ControlPlaneIdentity, extra: Mapping[str, str]
) -> dict[str, str]:
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {
        **extra,
        LABEL_MANAGED: "true",
        LABEL_CLAIM: service,
        LABEL_OWNER: identity.id,
        LABEL_OWNER_HOST: identity.host,
        LABEL_OWNER_PID: str(identity.pid),
        LABEL_CLAIMED_AT: now,
    }


def claimed_error(
    service: str, owner: ClaimOwner, *, remedy: str | None = None
) -> ServiceClaimedError:
    """The refusal of a service ``owner`` claims.

    Args:
        service: The service.
        owner: Who claims it.
        remedy: What to do when that control plane is gone for good; by
            default, how to start this one with a take-over.
    """
    if remedy is None:
        remedy = (
            f"start this one with `rolecall run --take-over {service}`"
            " (embedded: `Supervisor.apply(spec, take_over=True)`)"
        )

    return ServiceClaimedError(
        f"service {service!r} is managed by another control plane,"
        f" {owner.describe()}: stop that one first (or take the service out"
        f" of its spec); if it is gone for good, {remedy}",
        service=service,
        owner=owner.id,
        host=owner.host,
        pid=owner.pid,
        since=owner.since,
    )

"""Test code that uses rolecall without a container engine.

- `FakeRuntime`: an in-memory `ContainerRuntime`; an image's hooks are
  Python callables, and tests inject crashes, pauses and failed execs.
- `fake_kv_image`: the hooks of a fake replicated key-value service shaped
  like Redis, with `fake_kv_write` and `fake_kv_keys` to use its data.
- `ManualClock`: a clock that moves only when the test moves it.

A fake image maps hook names to handlers::

    def plan(call: FakeHookCall) -> dict[str, object]:
        return {"roles": ["standalone"], "topologies": ["standalone"]}

    def status(call: FakeHookCall) -> dict[str, object]:
        if call.container.store.get("broken"):
            raise FakeHookExit(75, stderr="not ready yet")

        return {"role": "standalone", "healthy": True}

    runtime = FakeRuntime()
    runtime.add_image("example:fake", hooks={"plan": plan, "status": status})

A handler, sync or async, takes a `FakeHookCall`: the decoded ``payload``
(and its ``request``), ``env``, the ``container`` it runs in, and the
``runtime``. It returns the ``data`` of the hook's result, or raises
`FakeHookExit` to exit with a code: 65 for a bad payload, 69 for
unsupported, 75 for "try again later", any other for failure. State kept in
``call.container.store`` survives stop and start, like files in the
container; state kept in ``call.volumes[mount_path]`` (a dict per mounted
volume) survives the container too. ``call.runtime.resolve(address)`` finds
another member's container, so fake hooks can move data between members, as
the key-value image below does.
"""

from __future__ import annotations

from typing import Any, Final

import anyio
import anyio.lowlevel
from attrs import define, field

from rolecall.actors import ContainerState
from rolecall.actors._fake_runtime import (
    FakeContainer,
    FakeHook,
    FakeHookCall,
    FakeHookExit,
    FakeImage,
    FakeRuntime,
)
from rolecall.hooks_protocol import (
    ContainerGoneError,
    ExitClass,
    HookName,
    Role,
    Topology,
)

__all__ = [
    "KV_DATA_PATH",
    "KV_PORT",
    "FakeContainer",
    "FakeHook",
    "FakeHookCall",
    "FakeHookExit",
    "FakeImage",
    "FakeKVReadOnlyError",
    "FakeRuntime",
    "ManualClock",
    "fake_kv_image",
    "fake_kv_keys",
    "fake_kv_write",
]


# -- a clock for time-based logic -------------------------------------------


@define(eq=False)
class ManualClock:
    """A clock that moves only when a test moves it.

    Code that waits (backoff, deadlines, probe intervals) can take a clock
    with ``now()`` and ``await sleep(seconds)`` instead of calling anyio;
    production passes one made of ``anyio.current_time`` and
    ``anyio.sleep``, a test passes a `ManualClock` and calls `advance`. A
    30-second backoff then passes at once, at the moment the test picks.

    Pass ``clock.now`` as `FakeRuntime`'s ``clock`` to stamp engine events
    with the same time.

    Args:
        start: The time it shows, in seconds, before the first `advance`.
    """

    _now: float = field(default=0.0, alias="start")
    # (deadline, wake-up) per task inside sleep_until(); each task removes
    # its own entry when it wakes or is cancelled.
    _sleepers: list[tuple[float, anyio.Event]] = field(factory=list, init=False)
    # Set and dropped whenever a task starts to sleep; None when no task
    # waits in wait_sleepers().
    _sleeper_added: anyio.Event | None = field(default=None, init=False)

    @property
    def sleepers(self) -> int:
        """Tasks sleeping on this clock right now."""
        return len(self._sleepers)

    def now(self) -> float:
        """The clock's time, in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline came.

        Woken tasks run at their next turn, not inside this call.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; got {seconds!r} seconds")

        self._now += seconds
        for deadline, wake_up in self._sleepers:
            if deadline <= self._now:
                wake_up.set()

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has moved ``seconds`` on from now."""
        await self.sleep_until(self._now + seconds)

    async def sleep_until(self, deadline: float) -> None:
        """Wait until the clock shows ``deadline`` or later."""
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return

        entry = (deadline, anyio.Event())
        self._sleepers.append(entry)
        if self._sleeper_added is not None:
            self._sleeper_added.set()
            self._sleeper_added = None

        try:
            await entry[1].wait()
        finally:
            self._sleepers.remove(entry)

    async def wait_sleepers(self, count: int = 1) -> None:
        """Wait until at least ``count`` tasks sleep on this clock."""
        while len(self._sleepers) < count:
            if self._sleeper_added is None:
                self._sleeper_added = anyio.Event()

            await self._sleeper_added.wait()


# -- a fake replicated key-value service --------------------------------------

KV_PORT: Final = 6379
"""The port the fake key-value service declares in its plan."""

KV_DATA_PATH: Final = "/data"
"""Where the fake key-value service keeps its data (mount a volume here)."""

_KV_ROLES: Final = (Role.STANDALONE, Role.PRIMARY, Role.REPLICA, Role.BACKUP)
# Roles that copy a primary's data and refuse writes.
_KV_FOLLOWERS: Final = (Role.REPLICA, Role.BACKUP)


class FakeKVReadOnlyError(Exception):
    """A write went to a fake key-value member that is a replica.

    Attributes:
        container_id: The replica's container.
    """

    def __init__(self, message: str, *, container_id: str) -> None:
        super().__init__(message)
        self.container_id = container_id


def fake_kv_image() -> dict[str, FakeHook]:
    """The hooks of a fake key-value service that replicates like Redis.

    Register them with ``runtime.add_image(name, hooks=fake_kv_image())``.
    The service keeps its state on its "disk": the volume mounted at
    `KV_DATA_PATH`, or the container's store when none is. The state is its
    keys, an offset that counts writes, its role, the primary it follows,
    and the last epoch it applied.

    - ``plan``: roles standalone, primary, replica and backup; topologies
      standalone and redundant; port `KV_PORT`; data path `KV_DATA_PATH`.
    - ``configure`` keeps the payload's config and ``env.PASSWORD``, the
      password it asks of replicas and gives its primary, as Redis's
      ``requirepass`` and ``masterauth``; ``start`` and ``stop`` have
      nothing to do (the fake serves while its container runs).
    - ``role`` takes ``request.role``, ``request.epoch`` and, for a replica
      or a backup node (a replica by another name),
      ``request.primary`` (a member id from ``members``, or an address). It
      refuses an epoch older than the last it applied with exit 1 (failed),
      as the protocol says, so a late command cannot undo a failover. A
      replica copies its primary's keys and offset at once. With
      ``request.handover`` a primary first hands every key to the new
      primary, then follows it (exit 75 when that one does not run).
    - ``status`` reports role, health, offset, link and epoch.

    Replication is pulled: a replica copies its primary's data whenever its
    ``role`` or ``status`` hook runs, so writes made since then are not on
    it yet, as on a lagging replica. A replica whose primary does not run,
    or whose password differs from its primary's, reports ``link_up:
    false`` and keeps the data it has.

    Returns:
        Hook name -> handler, for `FakeRuntime.add_image`.
    """
    return {
        HookName.PLAN: _kv_plan,
        HookName.CONFIGURE: _kv_configure,
        HookName.START: _kv_nothing,
        HookName.STOP: _kv_nothing,
        HookName.ROLE: _kv_role,
        HookName.STATUS: _kv_status,
    }


def fake_kv_write(runtime: FakeRuntime, container_id: str, key: str, value: Any) -> int:
    """Write one key to a fake key-value member, as a client would.

    Returns:
        The member's replication offset after the write.

    Raises:
        ContainerGoneError: The container does not exist or is not running.
        FakeKVReadOnlyError: The member is a replica.
    """
    container = runtime.container(container_id)
    if container.state is not ContainerState.RUNNING:
        raise ContainerGoneError(
            f"fake key-value member {container.name!r} is {container.state}; "
            "it answers only while running",
            container_id=container.id,
        )

    disk = _kv_disk(runtime, container)
    if disk["role"] in _KV_FOLLOWERS:
        raise FakeKVReadOnlyError(
            f"fake key-value member {container.name!r} is a follower of "
            f"{disk['primary']!r}; write to the primary",
            container_id=container.id,
        )

    disk["keys"][key] = value
    disk["offset"] += 1

    return int(disk["offset"])


def fake_kv_keys(runtime: FakeRuntime, container_id: str) -> dict[str, Any]:
    """A copy of the keys a fake key-value member holds, running or not.

    Raises:
        ContainerGoneError: The container does not exist.
    """
    container = runtime.container(container_id)

    return dict(_kv_disk(runtime, container)["keys"])


def _kv_disk(runtime: FakeRuntime, container: FakeContainer) -> dict[str, Any]:
    disk = runtime.volumes_of(container).get(KV_DATA_PATH, container.store)
    disk.setdefault("keys", {})
    disk.setdefault("offset", 0)
    disk.setdefault("role", Role.STANDALONE.value)
    disk.setdefault("primary", None)
    disk.setdefault("epoch", 0)
    disk.setdefault("link_up", None)
    disk.setdefault("password", None)

    return disk


def _kv_plan(call: FakeHookCall) -> dict[str, Any]:
    return {
        "roles": [role.value for role in _KV_ROLES],
        "topologies": [Topology.STANDALONE.value, Topology.REDUNDANT.value],
        "behaviours": ["migratable", "switchover"],
        "ports": [KV_PORT],
        "data_paths": [KV_DATA_PATH],
        "moves": ["replication"],
    }


def _kv_configure(call: FakeHookCall) -> dict[str, Any]:
    disk = _kv_disk(call.runtime, call.container)
    disk["config"] = dict(call.payload.get("config") or {})
    disk["password"] = (call.payload.get("env") or {}).get("PASSWORD")

    return {}


def _kv_nothing(call: FakeHookCall) -> dict[str, Any]:
    return {}


def _kv_role(call: FakeHookCall) -> dict[str, Any]:
    disk = _kv_disk(call.runtime, call.container)
    role = call.request.get("role")
    epoch = call.request.get("epoch", 0)
    if role not in _KV_ROLES or not isinstance(epoch, int):
        raise FakeHookExit(
            ExitClass.BAD_PAYLOAD.value,
            stderr=f"role: expected a role of {[r.value for r in _KV_ROLES]} "
            f"and an integer epoch, got {role!r} and {epoch!r}",
        )

    if epoch < disk["epoch"]:
        raise FakeHookExit(
            1,
            stderr=f"role: refusing epoch {epoch}, older than epoch "
            f"{disk['epoch']} already applied",
        )

    follower = role in _KV_FOLLOWERS
    primary = _primary_address(call) if follower else None
    if follower and primary is None:
        raise FakeHookExit(
            ExitClass.BAD_PAYLOAD.value,
            stderr=f"role: a {role} needs request.primary",
        )

    if call.request.get("handover") and disk["role"] not in _KV_FOLLOWERS:
        _kv_hand_over(call, disk, primary)

    disk.update(role=role, epoch=epoch, primary=primary, link_up=None)
    if primary is not None:
        _kv_pull(call, disk)

    call.log(f"role {role} at epoch {epoch}")

    return {"role": role, "epoch": epoch, "link_up": disk["link_up"]}


def _kv_hand_over(call: FakeHookCall, disk: dict[str, Any], target: str | None) -> None:
    # A switchover: the new primary gets every write before this one follows.
    network = call.container.spec.network
    source = call.runtime.resolve(target or "", network=network)
    if source is None or source is call.container or not source.alive:
        raise FakeHookExit(
            ExitClass.RETRY_LATER.value,
            stderr=f"role: handover target {target!r} does not run",
        )

    target_disk = _kv_disk(call.runtime, source)
    target_disk["keys"] = dict(disk["keys"])
    target_disk["offset"] = disk["offset"]
    target_disk["link_up"] = True


def _kv_status(call: FakeHookCall) -> dict[str, Any]:
    disk = _kv_disk(call.runtime, call.container)
    replica = disk["role"] in _KV_FOLLOWERS
    if replica:
        _kv_pull(call, disk)

    return {
        "role": disk["role"],
        "healthy": True,
        "replication_offset": disk["offset"],
        "link_up": disk["link_up"] if replica else None,
        "epoch": disk["epoch"],
        "details": {"synced": disk["link_up"] is True or not replica},
    }


def _primary_address(call: FakeHookCall) -> str | None:
    # ``primary`` names a member by id (its address is in ``members``), or
    # is an address itself.
    primary = call.request.get("primary")
    if not isinstance(primary, str) or not primary:
        return None

    for member in call.payload.get("members") or ():
        if isinstance(member, dict) and member.get("id") == primary:
            return str(member.get("address") or primary)

    return primary


def _kv_pull(call: FakeHookCall, disk: dict[str, Any]) -> None:
    # A full copy of the primary's data, as a replica's resync does.
    network = call.container.spec.network
    source = call.runtime.resolve(disk["primary"], network=network)
    if (
        source is None
        or source is call.container
        or source.state is not ContainerState.RUNNING
    ):
        disk["link_up"] = False
        return

    source_disk = _kv_disk(call.runtime, source)
    if source_disk["password"] != disk["password"]:
        disk["link_up"] = False  # the primary refuses to authenticate it
        return

    disk["keys"] = dict(source_disk["keys"])
    disk["offset"] = source_disk["offset"]
    disk["link_up"] = True

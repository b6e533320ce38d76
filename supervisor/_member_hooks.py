"""Run a data hook (backup, restore, export, import) on one member.

The supervisor drives the lifecycle hooks itself; the data hooks run when
someone asks. They go through the member's container actor like every
other hook, so they never overlap with a probe or a role change of the
same container, and the service's config, env and members reach them in
the payload as usual.
"""

from __future__ import annotations

from typing import Any

from rolecall.actors import RunHook
from rolecall.hooks_protocol import HookName, HookResult, Role, SpecError

from ._supervisor import Supervisor

__all__ = ["DATA_HOOKS", "backup_member", "run_member_hook"]

DATA_HOOKS = frozenset(
    {HookName.BACKUP, HookName.RESTORE, HookName.EXPORT, HookName.IMPORT}
)
"""Hooks `run_member_hook` runs; the others belong to the supervisor."""


async def run_member_hook(
    supervisor: Supervisor,
    service: str,
    member: str,
    hook: HookName | str,
    request: dict[str, Any] | None = None,
    *,
    timeout: float,
) -> HookResult:
    """Run a data hook on one member of a service and return its result.

    Bulk data never travels in the request or the result: ``request``
    names a path inside the container (on a volume), and the data moves
    through the volume or the engine's archive API.

    Args:
        supervisor: The supervisor running the service.
        service: The service's name.
        member: The member's id (``db-2``).
        hook: ``backup``, ``restore``, ``export`` or ``import``.
        request: What is asked, for example ``{"path": "/data/backups/b1"}``.
        timeout: Seconds to wait for the hook, queueing behind the
            member's other hooks included.

    Returns:
        The hook's result.

    Raises:
        SpecError: No such service or member, or ``hook`` is not a data
            hook.
        HookError: The hook failed; the error names its exit code.
        AskTimeoutError: No answer within ``timeout`` seconds.
    """
    name = _data_hook(service, hook)
    controller = supervisor.controllers.get(service)
    if controller is None:
        known = ", ".join(sorted(supervisor.controllers)) or "none"
        raise SpecError(
            f"no service named {service!r} (known: {known})", service=service
        )

    target = controller.members.get(member)
    if target is None:
        known = ", ".join(controller.members) or "none"
        raise SpecError(
            f"service {service!r} has no member {member!r} (members: {known})",
            service=service,
        )

    message = RunHook(controller.view(target.engine), name, dict(request or {}))
    result = await target.ref.ask(message, timeout=timeout)
    if not isinstance(result, HookResult):
        raise TypeError(f"the {name} hook answered {result!r}, not a HookResult")

    return result


def backup_member(supervisor: Supervisor, service: str) -> str:
    """The member of a service to run ``backup`` on: its backup node.

    A backup node is an extra member (``ServiceSpec.extras = {"backup":
    1}``) that follows the writer and is never promoted, so a backup
    taken there costs the writer nothing. Of several, the oldest that runs
    and answers healthy is chosen.

    Raises:
        SpecError: No such service, or none of its members is a backup node
            that runs, holds the backup role and answers healthy.
    """
    status = supervisor.status(service)
    nodes = [
        m
        for m in status.members
        if m.role is Role.BACKUP and m.alive and m.ready and m.healthy
    ]
    if not nodes:
        roles = ", ".join(f"{m.id}: {m.role}" for m in status.members) or "none"
        raise SpecError(
            f"service {service!r} has no healthy backup node (members: {roles}):"
            ' ask for one with `extras = {"backup": 1}` and wait until it has'
            " converged, or run `backup` on a member of your choice with"
            " run_member_hook",
            service=service,
        )

    return nodes[0].id


def _data_hook(service: str, hook: HookName | str) -> HookName:
    try:
        name = HookName(hook)
    except ValueError:
        name = None

    if name not in DATA_HOOKS:
        allowed = ", ".join(sorted(h.value for h in DATA_HOOKS))
        raise SpecError(
            f"run_member_hook runs data hooks ({allowed}), not {hook!r}: the"
            " supervisor runs the others itself",
            service=service,
        )

    return name

"""Stopped members no journal knows: when none may be chosen as the writer.

Adoption without a journal record cannot tell which of several stopped
members took the last writes; starting one as the writer would have the
others copy its data over theirs. This is the refusal, with what to do.
"""

from __future__ import annotations

from rolecall.actors import ContainerInfo
from rolecall.hooks_protocol import WriterUnknownError

from ._naming import LABEL_CREATED_EPOCH, LABEL_CREATED_ROLE, LABEL_EXTRA, LABEL_MEMBER
from ._observing import is_running
from ._service_record import ServiceRecord

__all__ = ["refuse_to_guess"]


def refuse_to_guess(
    service: str, found: dict[str, ContainerInfo], record: ServiceRecord | None
) -> None:
    """Raise when several stopped members may each hold the newest data.

    Raises:
        WriterUnknownError: Two or more members that may take writes are
            down, no record knows them, and none of the service runs.
    """
    known = record.members if record is not None else {}
    topology = {m: i for m, i in found.items() if LABEL_EXTRA not in i.labels}
    if any(is_running(info) for info in topology.values()):
        return  # what runs says what it is; a stopped one is a lost member

    unknown = [m for m in topology if m not in known]
    if len(unknown) < 2:  # one alone holds the only copy: it is started
        return

    listed = "; ".join(_described(topology[m]) for m in unknown)
    first = topology[unknown[0]].name
    raise WriterUnknownError(
        f"service {service!r} has {len(unknown)} stopped members that no"
        f" journal record knows ({listed}), and none of it runs: any of them"
        " may hold the newest data, and starting one as the writer would"
        " have the others copy its data over theirs, so rolecall starts and"
        " removes none of them. Choose the one to keep: remove the others'"
        f" containers by hand (`docker rm {first}`, for example; their data"
        " volumes stay until you remove them) and rolecall starts the one left"
        " as the writer and makes new replicas from it; or start rolecall"
        " again with the state directory that managed the service, whose"
        " journal knows them",
        service=service,
        members=tuple(unknown),
    )


def _described(info: ContainerInfo) -> str:
    role = info.labels.get(LABEL_CREATED_ROLE) or "no role"
    epoch = info.labels.get(LABEL_CREATED_EPOCH, "?")
    return (
        f"{info.labels[LABEL_MEMBER]}: container {info.name}, created as {role}"
        f" at epoch {epoch}, exit code {info.exit_code}"
    )

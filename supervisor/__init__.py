"""Desired state, the reconciler and the supervisor.

`open_supervisor` runs the control plane inside the caller's event loop; a
`ServiceSpec` says what a service should look like, and the supervisor makes
it so and keeps it so.
"""

from __future__ import annotations

from ._claim import ClaimOwner, claim_name, claimed_error, down_remedy, drop_claim
from ._dead_letters import DeadLetter
from ._identity import ControlPlaneIdentity, stored_id
from ._journal import JOURNAL_DIR, Journal
from ._member_hooks import DATA_HOOKS, backup_member, run_member_hook
from ._naming import (
    LABEL_ENGINE,
    LABEL_EXTRA,
    LABEL_MANAGED,
    LABEL_MEMBER,
    LABEL_NUMBER,
    LABEL_SERVICE,
)
from ._open_supervisor import open_supervisor
from ._reconciler import (
    ApplyRole,
    CreateMember,
    FenceMember,
    ObservedMember,
    PrepareMember,
    RemoveMember,
    RestartMember,
    Step,
    choose_primary,
    plan_steps,
)
from ._records import MemberView, ServiceEvent, ServiceStatus
from ._spec import MOVE_WAYS, ServiceSpec, check_plan, validate_spec
from ._supervision import RestartKind, Strategy, Supervision
from ._supervisor import Supervisor
from ._switchover import SwitchoverSupersededError

__all__ = [
    "DATA_HOOKS",
    "JOURNAL_DIR",
    "LABEL_ENGINE",
    "LABEL_EXTRA",
    "LABEL_MANAGED",
    "LABEL_MEMBER",
    "LABEL_NUMBER",
    "LABEL_SERVICE",
    "MOVE_WAYS",
    "ApplyRole",
    "ClaimOwner",
    "ControlPlaneIdentity",
    "CreateMember",
    "DeadLetter",
    "FenceMember",
    "Journal",
    "MemberView",
    "ObservedMember",
    "PrepareMember",
    "RemoveMember",
    "RestartKind",
    "RestartMember",
    "ServiceEvent",
    "ServiceSpec",
    "ServiceStatus",
    "Step",
    "Strategy",
    "Supervision",
    "Supervisor",
    "SwitchoverSupersededError",
    "backup_member",
    "check_plan",
    "choose_primary",
    "claim_name",
    "claimed_error",
    "down_remedy",
    "drop_claim",
    "open_supervisor",
    "plan_steps",
    "run_member_hook",
    "stored_id",
    "validate_spec",
]

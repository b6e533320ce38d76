"""The claiming part of a controller: hold the engine's claim on the service.

A controller claims its service before its first pass adopts or creates
anything, and checks the claim at every pass after (see ``_claim``). A
claim refused or lost ends the controller's work on the service: the pass
that meets it gives up on the service with the error's message, and every
other service carries on.
"""

from __future__ import annotations

from ._claim import check_claim, claim_service
from ._controller_state import ControllerState

__all__ = ["Claiming"]


class Claiming(ControllerState):
    """Holds the service's claim for the controller's control plane."""

    async def hold_claim(self) -> None:
        """Claim the service, or check that the claim is still ours.

        A take-over asked for (`ControllerState.take_over`) replaces
        another control plane's claim once, with a ``service_taken_over``
        event.

        Raises:
            ServiceClaimedError: Another control plane holds the claim.
            EngineError: The engine failed.
        """
        if self.claimed and not self.take_over:
            await check_claim(
                self.home_runtime,
                self.spec.name,
                self.identity,
                labels=self.spec.labels,
            )
            return

        previous = await claim_service(
            self.home_runtime,
            self.spec.name,
            self.identity,
            labels=self.spec.labels,
            take_over=self.take_over,
        )
        self.claimed = True
        self.take_over = False
        if previous is None:
            return

        self.event(
            "service_taken_over",
            None,
            f"took the service over from control plane {previous.describe()}",
            previous_owner=previous.id,
            previous_host=previous.host,
            previous_pid=previous.pid,
            previous_since=previous.since,
        )

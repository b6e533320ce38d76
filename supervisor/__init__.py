"""Desired state, the reconciler and the supervisor actor."""

from __future__ import annotations

__all__: list[str] = []

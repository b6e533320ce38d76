"""rolecall: a control plane that treats containers as autonomous actors."""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__"]

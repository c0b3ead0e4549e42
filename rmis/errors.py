"""Exceptions raised by rmis.

Every error a user can provoke with bad input is an :class:`RMISError` (a ``ValueError``) whose
message says what was wrong, where (file, dataset, section) and what to do about it.
"""

from __future__ import annotations


class RMISError(ValueError):
    """Bad input or an impossible request; the message is meant for the user."""


class SplitError(RMISError):
    """A sealed split cannot place every class on both sides."""

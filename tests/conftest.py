"""Shared test fixtures.

Tests that read the real data and documents in ``../shared`` (beside the checkout) skip with a
reason where it is absent, e.g. in a user's clone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared() -> Path:
    """The ``../shared`` folder beside the checkout (skips the test when absent)."""
    if not (SHARED / "docs").is_dir():
        pytest.skip(f"needs the project's shared folder at {SHARED} (absent in a user's clone)")
    return SHARED

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


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole synthetic suite, generated once per test session (about 7 s)."""
    from rmis.data.synth import SYNTH_DATASETS, ensure

    root = tmp_path_factory.mktemp("synth_shared")
    for name in SYNTH_DATASETS:
        ensure(name, root)
    return root


@pytest.fixture
def synth_cache(synth_root: Path, tmp_path: Path) -> Path:
    """A fresh cache folder (no embeddings) whose ``synth/`` is the session's generated suite,
    so a test pays for extraction, never for generation."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "synth").symlink_to(synth_root, target_is_directory=True)
    return cache

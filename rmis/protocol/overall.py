"""RMIS overall score (PROTOCOL.md section 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rmis.data.specs import AD_DATASETS, FD_DATASETS


@dataclass(frozen=True)
class Overall:
    """Task and benchmark scores in percent; None where a dataset of the task is missing."""

    ad: float | None
    fd: float | None
    rmis: float | None
    missing: tuple[str, ...]


def overall_score(
    scores: Mapping[str, float],
    ad_datasets: Sequence[str] = AD_DATASETS,
    fd_datasets: Sequence[str] = FD_DATASETS,
) -> Overall:
    """AD = mean of the DCASE dataset scores, FD = mean of the FD dataset scores (equal weight
    each), RMIS = (AD + FD) / 2. A task score is only given when all its datasets are present."""

    def task_mean(names: Sequence[str]) -> float | None:
        if any(n not in scores for n in names):
            return None
        return float(np.mean([scores[n] for n in names]))

    ad, fd = task_mean(ad_datasets), task_mean(fd_datasets)
    rmis = (ad + fd) / 2 if ad is not None and fd is not None else None
    missing = tuple(n for n in (*ad_datasets, *fd_datasets) if n not in scores)
    return Overall(ad=ad, fd=fd, rmis=rmis, missing=missing)

"""Exact cosine k-nearest-neighbour search, reused across many train/test partitions.

The fault-diagnosis protocol runs the same k-NN classifier on 10 (fixed split) or 190 (multi-split
curve) partitions of ONE set of embeddings. Searching again per run, as the official harness does,
repeats the dominant cost, a train x test similarity product, every time. :class:`CosineKNN` instead
computes the similarities of all pairs once, in float32 blocked matrix products (memory bounded by
``block_bytes``), and keeps each item's ``M`` most similar items. A query for one partition then
walks those lists and picks the first ``k`` train items, which costs O(n_test * M).

The answer is exact, not approximate:

* a list answers a query only when its top-``k`` train set is certified: the gap between the
  ``k``-th and the ``(k+1)``-th train similarity (or the list's last similarity, below which every
  unlisted item lies) exceeds ``FP32_TOL``, far above the float32 rounding error of a dot product
  of unit vectors;
* every other row (too few train items in its list, or a near-tie at the boundary) is answered
  by a float64 search over all train items;
* the similarities returned are recomputed in float64, element by element, so identical vectors
  get identical similarities wherever they sit.

Neighbour order and ties: neighbours are sorted by similarity, descending; similarities within
``TIE_EPS`` of each other at the k-th place are ties, broken by the lowest item index (items are
indexed in file-id order by the callers, so ties are broken by file id).
"""

from __future__ import annotations

import numpy as np
import torch

from rmis.errors import RMISError

#: Certification margin for float32 similarities of unit vectors (|error| << 1e-5 in practice).
FP32_TOL = 1e-4
#: float64 similarities closer than this are ties, broken by the lowest item index.
TIE_EPS = 1e-12
_DEFAULT_BLOCK_BYTES = 1 << 28  # 256 MiB per block of similarities


def unit_rows(embeddings: np.ndarray, ids: list[str] | None = None) -> np.ndarray:
    """L2-normalise rows in float64.

    Args:
        embeddings: ``[N, D]`` real array.
        ids: optional names of the rows, used in error messages.

    Raises:
        RMISError: not 2-D, non-finite values or an all-zero row (named).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise RMISError(f"embeddings must be a non-empty [N, D] array, got shape {x.shape}")

    def name(i: int) -> str:
        return repr(ids[i]) if ids is not None else f"row {i}"

    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise RMISError(
            f"embedding of {name(int(bad[0]))} contains NaN or Inf ({bad.size} rows affected); "
            "re-extract it"
        )
    norms = np.linalg.norm(x, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise RMISError(
            f"embedding of {name(int(zero[0]))} is all zeros ({zero.size} rows affected): its "
            "cosine similarity is undefined; check the encoder output for that file"
        )
    return x / norms[:, None]


class CosineKNN:
    """Exact cosine k-NN over one embedding set, for many train/test partitions.

    Args:
        embeddings: ``[N, D]`` embeddings (any real dtype; normalised here).
        candidates: list length ``M`` kept per item; by default ``4 * max_group_size + 96``,
            enough for the lists to answer nearly every query of a sealed split (all members of
            an item's own group are always on its side, never train neighbours).
        max_group_size: largest number of items sealed together (only sizes the default ``M``).
        block_bytes: memory bound for one block of similarities.
        device: torch device for the one-off similarity product (e.g. ``"cuda"``).
        ids: optional row names for error messages.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        *,
        candidates: int | None = None,
        max_group_size: int = 1,
        block_bytes: int = _DEFAULT_BLOCK_BYTES,
        device: str | torch.device = "cpu",
        ids: list[str] | None = None,
    ) -> None:
        self.x64 = torch.from_numpy(unit_rows(embeddings, ids))
        self.n = self.x64.shape[0]
        self.block_bytes = int(block_bytes)
        m = candidates if candidates is not None else 4 * max_group_size + 96
        self.m = int(min(max(m, 1), self.n))
        self.complete = self.m == self.n
        self._build(torch.device(device))

    def _rows_per_block(self, width: int, itemsize: int) -> int:
        return max(1, self.block_bytes // (itemsize * max(width, 1)))

    def _build(self, device: torch.device) -> None:
        x32 = self.x64.to(device=device, dtype=torch.float32)
        self.cand_idx = torch.empty((self.n, self.m), dtype=torch.int32)
        self.cand_sim = torch.empty((self.n, self.m), dtype=torch.float32)
        step = self._rows_per_block(self.n, 4)
        with torch.inference_mode():
            for start in range(0, self.n, step):
                stop = min(start + step, self.n)
                sims = x32[start:stop] @ x32.T
                val, idx = torch.topk(sims, self.m, dim=1, largest=True, sorted=True)
                self.cand_sim[start:stop] = val.cpu()
                self.cand_idx[start:stop] = idx.to(torch.int32).cpu()
        self.threshold = self.cand_sim[:, -1].clone()

    def query(
        self, train_mask: np.ndarray, test_idx: np.ndarray, k: int = 5
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest train items of every test item.

        Args:
            train_mask: ``[N]`` bool, True for train items.
            test_idx: ``[n]`` indices of the test items (must not be train items).
            k: number of neighbours.

        Returns:
            ``(idx, sim)``: ``[n, k]`` int64 item indices and float64 cosine similarities, each
            row sorted by similarity descending, ties by index ascending.
        """
        train_mask_t = torch.as_tensor(np.asarray(train_mask, dtype=bool))
        n_train = int(train_mask_t.sum())
        if n_train < k:
            raise RMISError(f"k-NN with k={k} needs at least {k} train items, got {n_train}")
        test = torch.as_tensor(np.asarray(test_idx, dtype=np.int64))
        if bool(train_mask_t[test].any()):
            raise RMISError("an item cannot be both a train and a test item")
        chosen = torch.empty((len(test), k), dtype=torch.int64)

        with torch.inference_mode():
            nb = self.cand_idx[test].long()  # [n, M]
            sims = self.cand_sim[test]  # [n, M]
            is_train = train_mask_t[nb]
            count = is_train.cumsum(1)
            total = count[:, -1]
            at_k = (is_train & (count == k)).to(torch.uint8).argmax(1, keepdim=True)
            at_next = (is_train & (count == k + 1)).to(torch.uint8).argmax(1, keepdim=True)
            s_k = sims.gather(1, at_k).squeeze(1)
            s_next = sims.gather(1, at_next).squeeze(1)
            trusted = (total > k) & (s_k - s_next > FP32_TOL)
            if self.complete:
                trusted |= total == k
            else:
                trusted |= (total == k) & (s_k - self.threshold[test] > FP32_TOL)
            take = is_train & (count <= k)
            chosen[trusted] = nb[trusted][take[trusted]].view(-1, k)

            fallback = torch.nonzero(~trusted).squeeze(1)
            if len(fallback):
                train_idx = torch.nonzero(train_mask_t).squeeze(1)
                chosen[fallback] = self._exact(test[fallback], train_idx, k)
            sim = self._dots(test, chosen)
        return _sort_rows(chosen, sim)

    def _exact(self, rows: torch.Tensor, train_idx: torch.Tensor, k: int) -> torch.Tensor:
        """Float64 top-``k`` over all train items (ascending ``train_idx``) for ``rows``."""
        xt = self.x64[train_idx]
        out = torch.empty((len(rows), k), dtype=torch.int64)
        step = self._rows_per_block(len(train_idx), 8)
        kk = min(k + 1, len(train_idx))
        for start in range(0, len(rows), step):
            stop = min(start + step, len(rows))
            sims = self.x64[rows[start:stop]] @ xt.T
            val, idx = torch.topk(sims, kk, dim=1, largest=True, sorted=True)
            block = idx[:, :k].clone()
            if kk > k:
                for r in torch.nonzero(val[:, k - 1] - val[:, k] <= TIE_EPS).squeeze(1).tolist():
                    block[r] = _break_tie(sims[r], float(val[r, k - 1]), k)
            out[start:stop] = block
        return train_idx[out]

    def _dots(self, rows: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """Float64 similarities ``[n, k]`` of ``rows`` to ``chosen``, element by element."""
        n, k = chosen.shape
        out = torch.empty((n, k), dtype=torch.float64)
        step = self._rows_per_block(k * self.x64.shape[1], 8) // 4 or 1
        for start in range(0, n, step):
            stop = min(start + step, n)
            a = self.x64[rows[start:stop]].unsqueeze(1)
            out[start:stop] = (a * self.x64[chosen[start:stop]]).sum(-1)
        return out


def _break_tie(sims: torch.Tensor, boundary: float, k: int) -> torch.Tensor:
    """Columns of the top ``k`` of one row when values near ``boundary`` tie (lowest index wins)."""
    sure = torch.nonzero(sims > boundary + TIE_EPS).squeeze(1)
    tied = torch.nonzero((sims - boundary).abs() <= TIE_EPS).squeeze(1)
    return torch.cat([sure, tied[: k - len(sure)]])


def _sort_rows(idx: torch.Tensor, sim: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by similarity descending, then index ascending."""
    by_idx = torch.argsort(idx, dim=1, stable=True)
    idx, sim = idx.gather(1, by_idx), sim.gather(1, by_idx)
    by_sim = torch.argsort(-sim, dim=1, stable=True)
    return idx.gather(1, by_sim).numpy(), sim.gather(1, by_sim).numpy()

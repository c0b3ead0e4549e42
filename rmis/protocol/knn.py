"""Exact cosine k-nearest-neighbour search, reused across many train/test partitions.

The fault-diagnosis protocol runs the same k-NN classifier on 10 (fixed split) or 190 (multi-split
curve) partitions of ONE set of embeddings. Searching again per run, as the official harness does,
repeats the dominant cost, a train x test similarity product, every time. :class:`CosineKNN`
computes the similarities of all pairs once, in float32 products of blocks of items (memory
bounded by ``block_bytes``; each pair of blocks is multiplied once and serves both, so this is
half of the N x N product), and keeps each item's ``M`` most similar items. A query for one
partition then walks those lists for the first train items, which costs O(n_test * M).

The neighbour SET is exact, not approximate. Float32 similarities of unit vectors are within
``e = (D + 4) * 2**-24`` of the exact value (a rigorous bound), so with ``tol = 2e``:

* the train items whose listed float32 similarity is within ``tol`` of the k-th best contain the
  exact top ``k``. When that candidate set lies certainly inside the list (the k-th similarity
  exceeds the list's last one by more than ``tol``) and holds exactly ``k`` items, it IS the
  top ``k``; when it holds more (a near-tie at the k-th place), its items are re-ranked in
  float64;
* every other row (too few train items in its list) searches all train items in float32, and
  its candidates are re-ranked in float64 the same way;
* float64 similarities are computed element by element (:meth:`CosineKNN.exact_similarities`),
  so identical vectors get identical similarities wherever they sit; equal similarities are
  broken by the lowest item index (callers index items in file-id order, so exact ties, e.g.
  duplicated recordings, are broken by file id).

The similarities returned are float64 where a row was re-ranked and float32-accurate (within
``tol / 2``) otherwise; callers that need more (a close k-NN vote) recompute them with
:meth:`CosineKNN.exact_similarities`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rmis.errors import RMISError

_UNIT_ROUNDOFF_32 = 2.0**-24
_DEFAULT_BLOCK_BYTES = 1 << 26  # 64 MiB: blocks of 4096 x 4096 float32 similarities
_QUERY_BLOCK_BYTES = 1 << 24  # 16 MiB blocks for the rare rows a query searches in full
_PREFIX = 32  # list entries tried first by a query
_GATHER_BYTES = 1 << 21  # float64 rows gathered at once for element-wise dots (cache sized)


def fp32_tolerance(dim: int) -> float:
    """Certification margin: twice the float32 error bound of a unit-vector dot product."""
    return 2.0 * (dim + 4) * _UNIT_ROUNDOFF_32


def unit_rows(embeddings: np.ndarray, ids: list[str] | None = None) -> np.ndarray:
    """L2-normalise rows in float64.

    Args:
        embeddings: ``[N, D]`` real array.
        ids: optional names of the rows, used in error messages.

    Raises:
        RMISError: not 2-D, non-finite values or an all-zero row (named).
    """
    x = np.array(embeddings, dtype=np.float64)  # own copy, normalised in place
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
    x /= norms[:, None]
    return x


class CosineKNN:
    """Exact cosine k-NN over one embedding set, for many train/test partitions.

    Args:
        embeddings: ``[N, D]`` embeddings (any real dtype; normalised here).
        candidates: list length ``M`` kept per item; by default ``4 * max_group_size + 96``,
            enough for the lists to answer nearly every query of a sealed split (all members of
            an item's own group are always on its side, never train neighbours).
        max_group_size: largest number of items sealed together (only sizes the default ``M``).
        block_bytes: memory bound for one square block of float32 similarities.
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
        self.n, self.dim = self.x64.shape
        self.tol = fp32_tolerance(self.dim)
        self.block_bytes = int(block_bytes)
        m = candidates if candidates is not None else 4 * max_group_size + 96
        self.m = int(min(max(m, 1), self.n))
        self.max_group_size = int(max_group_size)
        self.complete = self.m == self.n
        self._build(torch.device(device))

    def _build(self, device: torch.device) -> None:
        """Each item's ``M`` most similar items, from half of the N x N similarity product.

        Items are cut into blocks of ``b`` rows (a ``b x b`` float32 block within
        ``block_bytes / 4``). A diagonal block's product gives its items their best ``M``
        within the block by a dense top-k; the ``M``-th of those is a lower bound of each
        item's final ``M``-th similarity (its "floor"). Then each pair of blocks ``I < J`` is
        multiplied ONCE and serves both sides: an entry can only enter row ``i``'s list if it
        is at least ``i``'s current floor, so only those entries (found by one comparison
        pass per side) are merged into the lists, and a merge raises the floors. Every
        similarity left out is below its row's floor, so the lists are exactly the top ``M``
        by float32 similarity, as one dense top-k per row would give (up to the order of
        exact ties)."""
        n, m = self.n, self.m
        self.x32 = self.x64.to(torch.float32)
        x32 = self.x32.to(device)
        b = min(n, max(1, math.isqrt(max(self.block_bytes, 4) // 4)))
        blocks = [(r0, min(r0 + b, n)) for r0 in range(0, n, b)]
        val = torch.full((n, m), -torch.inf, dtype=torch.float32, device=device)
        idx = torch.zeros((n, m), dtype=torch.int64, device=device)
        with torch.inference_mode():
            for r0, r1 in blocks:
                kk = min(m, r1 - r0)
                top = torch.topk(x32[r0:r1] @ x32[r0:r1].T, kk, dim=1)
                val[r0:r1, :kk] = top.values
                idx[r0:r1, :kk] = top.indices + r0
            floor = val[:, -1].clone()  # -inf while a list is not full
            for a, (r0, r1) in enumerate(blocks):
                for c0, c1 in blocks[a + 1 :]:
                    sims = x32[r0:r1] @ x32[c0:c1].T
                    rr, cc = torch.nonzero(sims >= floor[r0:r1, None], as_tuple=True)
                    for_rows = (rr, cc + c0, sims[rr, cc])
                    rr, cc = torch.nonzero(sims >= floor[None, c0:c1], as_tuple=True)
                    by_col = torch.argsort(cc, stable=True)
                    for_cols = (cc[by_col], rr[by_col] + r0, sims[rr, cc][by_col])
                    del sims
                    _merge_lists(val, idx, floor, r0, r1 - r0, *for_rows)
                    _merge_lists(val, idx, floor, c0, c1 - c0, *for_cols)
            order = torch.sort(val, dim=1, descending=True, stable=True)
            self.cand_sim = order.values.cpu()
            self.cand_idx = idx.gather(1, order.indices).cpu()
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
            ``(idx, sim)``: ``[n, k]`` int64 item indices (the exact top ``k``, ties to the
            lowest index) and their cosine similarities (float64 dtype; accurate to ``tol / 2``
            or better, see the module docstring), each row in descending similarity order.
        """
        train_mask_t = torch.as_tensor(np.asarray(train_mask, dtype=bool))
        n_train = int(train_mask_t.sum())
        if n_train < k:
            raise RMISError(f"k-NN with k={k} needs at least {k} train items, got {n_train}")
        test = torch.as_tensor(np.asarray(test_idx, dtype=np.int64))
        if bool(train_mask_t[test].any()):
            raise RMISError("an item cannot be both a train and a test item")
        out_idx = torch.empty((len(test), k), dtype=torch.int64)
        out_sim = torch.empty((len(test), k), dtype=torch.float64)

        with torch.inference_mode():
            pending = torch.arange(len(test))
            # A prefix of the lists answers most rows (the k-th train item is expected near
            # position k / train fraction after the item's own group); the full lists most
            # others.
            expected = int(3 * k * self.n / n_train) + self.max_group_size
            for width in sorted({min(max(expected, _PREFIX), self.m), self.m}):
                if len(pending):
                    done = self._from_lists(test, pending, train_mask_t, k, width, out_idx, out_sim)
                    pending = pending[~done]
            if len(pending):
                train_idx = torch.nonzero(train_mask_t).squeeze(1)
                padded = self._exact_candidates(test[pending], train_idx, k)
                out_idx[pending], out_sim[pending] = self._rank(test[pending], padded, k)
        return out_idx.numpy(), out_sim.numpy()

    def _from_lists(
        self,
        test: torch.Tensor,
        pending: torch.Tensor,
        train_mask: torch.Tensor,
        k: int,
        width: int,
        out_idx: torch.Tensor,
        out_sim: torch.Tensor,
    ) -> torch.Tensor:
        """Answer the ``pending`` query rows whose top-``k`` is certified within the first
        ``width`` list entries; returns a bool mask over ``pending`` of the rows answered."""
        rows = test[pending]
        nb = self.cand_idx[rows, :width]  # sorted by float32 similarity, descending
        sims = self.cand_sim[rows, :width]
        is_train = train_mask[nb]
        count = is_train.cumsum(1, dtype=torch.int32)
        at_k = (is_train & (count == k)).to(torch.uint8).argmax(1, keepdim=True)
        s_k = sims.gather(1, at_k)
        done = count[:, -1] >= k
        if width < self.n:  # unlisted items are at most the last listed similarity
            done &= (s_k - sims[:, -1:]).squeeze(1) > self.tol
        cand = is_train & (sims >= s_k - self.tol)
        n_cand = cand.sum(1)
        answered = torch.nonzero(done).squeeze(1)
        unique = answered[n_cand[answered] == k]  # the top-k set is certified: keep float32
        if len(unique):
            out_idx[pending[unique]] = _pack(cand[unique], nb[unique], k)
            out_sim[pending[unique]] = _pack_values(cand[unique], sims[unique], k)
        crowded = answered[n_cand[answered] > k]  # near-ties at the k-th place: float64
        if len(crowded):
            padded = _pack(cand[crowded], nb[crowded], int(n_cand[crowded].max()))
            out_idx[pending[crowded]], out_sim[pending[crowded]] = self._rank(
                rows[crowded], padded, k
            )
        return done

    def _exact_candidates(
        self, rows: torch.Tensor, train_idx: torch.Tensor, k: int
    ) -> torch.Tensor:
        """Search all train items: ``[len(rows), c]`` candidates (-1 padded), every train item
        whose float32 similarity is within ``tol`` of the row's k-th best (a superset of the
        exact top ``k``)."""
        xt = self.x32[train_idx]
        step = max(1, min(self.block_bytes, _QUERY_BLOCK_BYTES) // (4 * len(train_idx)))
        kk = min(k + 1, len(train_idx))
        blocks = []
        for start in range(0, len(rows), step):
            sims = self.x32[rows[start : start + step]] @ xt.T
            val, col = torch.topk(sims, kk, dim=1, sorted=True)
            cand = train_idx[col[:, :k]]
            if kk > k:  # rows where more than k items lie within tol of the k-th best
                crowded = torch.nonzero(val[:, k] >= val[:, k - 1] - self.tol).squeeze(1)
                if len(crowded):
                    near = sims[crowded] >= val[crowded, k - 1 : k] - self.tol
                    wide = _pack(near, train_idx.expand(len(near), -1), int(near.sum(1).max()))
                    cand = torch.cat([cand, torch.full((len(cand), wide.shape[1] - k), -1)], 1)
                    cand[crowded] = wide
            blocks.append(cand)
        width = max(c.shape[1] for c in blocks)
        return torch.cat(
            [torch.nn.functional.pad(c, (0, width - c.shape[1]), value=-1) for c in blocks]
        )

    def exact_similarities(self, rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Float64 cosine similarities ``[n, c]`` of items ``rows`` ``[n]`` to items ``idx``
        ``[n, c]``, element by element (identical vectors give identical values)."""
        rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return self._dots(rows_t, torch.as_tensor(np.asarray(idx, dtype=np.int64))).numpy()

    def _dots(self, rows: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        n, c = cand.shape
        sim = torch.empty((n, c), dtype=torch.float64)
        step = max(1, _GATHER_BYTES // (8 * c * self.dim))
        for start in range(0, n, step):
            stop = min(start + step, n)
            a = self.x64[rows[start:stop]].unsqueeze(1)
            sim[start:stop] = (a * self.x64[cand[start:stop]]).sum(-1)
        return sim

    def _rank(self, rows: torch.Tensor, cand: torch.Tensor, k: int):
        """Top ``k`` of ``cand`` (``[n, c]`` item indices, -1 = none) by float64 similarity
        descending, then index ascending. Returns ``(idx [n, k], sim [n, k])``."""
        valid = cand >= 0
        sim = self._dots(rows, cand.clamp(min=0)).masked_fill(~valid, -torch.inf)
        key_idx = torch.where(valid, cand, torch.iinfo(torch.int64).max)
        by_idx = torch.argsort(key_idx, dim=1, stable=True)
        cand, sim = cand.gather(1, by_idx), sim.gather(1, by_idx)
        by_sim = torch.argsort(-sim, dim=1, stable=True)[:, :k]
        return cand.gather(1, by_sim), sim.gather(1, by_sim)


def _merge_lists(
    val: torch.Tensor,
    idx: torch.Tensor,
    floor: torch.Tensor,
    r0: int,
    n_rows: int,
    rows: torch.Tensor,
    items: torch.Tensor,
    sims: torch.Tensor,
) -> None:
    """Merge new entries into rows ``r0 .. r0 + n_rows`` of the top-``M`` lists (``val``,
    ``idx``) in place and raise their ``floor``.

    ``rows`` (ascending, relative to ``r0``), ``items`` and ``sims`` list the new entries; each
    row's entries are left-aligned in a ``-inf``-padded matrix beside its list, and one top-k
    per row keeps the best ``M``.
    """
    if not len(rows):
        return
    count = torch.bincount(rows, minlength=n_rows)
    start = torch.cumsum(count, 0) - count
    pos = torch.arange(len(rows), device=rows.device) - start[rows]
    width = int(count.max())
    new_val = torch.full((n_rows, width), -torch.inf, dtype=val.dtype, device=val.device)
    new_idx = torch.zeros((n_rows, width), dtype=idx.dtype, device=idx.device)
    new_val[rows, pos] = sims
    new_idx[rows, pos] = items
    span = slice(r0, r0 + n_rows)
    top = torch.topk(torch.cat([val[span], new_val], 1), val.shape[1], dim=1)
    val[span] = top.values
    idx[span] = torch.cat([idx[span], new_idx], 1).gather(1, top.indices)
    floor[span] = top.values[:, -1]


def _pack_values(mask: torch.Tensor, values: torch.Tensor, width: int) -> torch.Tensor:
    """Like :func:`_pack` for float32 values, returned as float64."""
    r, c = mask.nonzero(as_tuple=True)
    out = torch.empty((mask.shape[0], width), dtype=torch.float64)
    out[r, (mask.cumsum(1) - 1)[r, c]] = values[r, c].to(torch.float64)
    return out


def _pack(mask: torch.Tensor, idx: torch.Tensor, width: int) -> torch.Tensor:
    """Entries of ``idx`` where ``mask`` holds, left-aligned per row in ``[n, width]`` (-1 pad),
    keeping their order."""
    pos = mask.cumsum(1) - 1
    out = torch.full((mask.shape[0], width), -1, dtype=torch.int64)
    r, c = mask.nonzero(as_tuple=True)
    out[r, pos[r, c]] = idx[r, c]
    return out

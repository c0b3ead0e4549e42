"""``rmis check-model``: quick behavioural checks of an encoder adapter on random inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rmis.encoders import Encoder

#: Rates tried for native-rate encoders (Hz): the RMIS range.
NATIVE_RATES = (16_000, 25_600, 44_100, 51_200, 64_000)


@dataclass(frozen=True)
class Check:
    rate: int
    check: str
    ok: bool
    detail: str


def check_encoder(encoder: Encoder, seconds: float = 1.0, batch: int = 3) -> list[Check]:
    """Run the checks at each relevant rate; returns one row per (rate, check)."""
    rates = NATIVE_RATES if encoder.sample_rate is None else (encoder.sample_rate,)
    device = encoder.device
    out: list[Check] = []
    gen = torch.Generator().manual_seed(0)
    for rate in rates:
        x = torch.randn(batch, int(seconds * rate), generator=gen).to(device) * 0.1
        try:
            with torch.inference_mode():
                y = encoder.embed(x, rate)
                y2 = encoder.embed(x, rate)
                singles = torch.cat([encoder.embed(x[i : i + 1], rate) for i in range(batch)])
        except Exception as exc:  # report, do not crash: this is a diagnostic
            out.append(Check(rate, "runs", False, f"{type(exc).__name__}: {exc}"))
            continue
        shape_ok = y.ndim == 2 and y.shape[0] == batch and y.shape[1] > 0
        out.append(Check(rate, "shape [B, D]", shape_ok, f"{tuple(y.shape)}"))
        out.append(Check(rate, "dtype float", y.is_floating_point(), str(y.dtype)))
        finite = bool(torch.isfinite(y).all())
        out.append(Check(rate, "no NaN/Inf", finite, ""))
        same = torch.equal(y, y2)
        diff = (y - y2).abs().max().item() if y.shape == y2.shape else float("nan")
        out.append(Check(rate, "deterministic", same, f"max |diff| {diff:.2e}"))
        if singles.shape == y.shape:
            d = (singles - y).abs().max().item()
            scale = y.abs().max().item() or 1.0
            ok = d <= 1e-4 * scale + 1e-6
            out.append(Check(rate, "batch independent", ok, f"max |diff| {d:.2e}"))
        else:
            out.append(Check(rate, "batch independent", False, f"{tuple(singles.shape)}"))
    return out

"""FISHER self-supervised pre-training, one file from a laptop to many GPUs.

The authors have not released their trainer; this recipe follows the paper (FISHER,
arXiv:2507.16696, section 3, Table 2, section 5.1) and ``../shared/docs/FISHER.md``. Read it top
to bottom: config, data, model, loss, loop. The front-end (STFT, log, normalisation, sub-band
folding) and the student encoder are the very modules ``rmis eval fisher-*`` runs
(:mod:`rmis.models.fisher`), so the encoder this script writes is evaluated unchanged.

Usage (one process, CPU or one GPU; or ``torchrun --nproc-per-node N [--nnodes M ...]``)::

    python recipes/fisher_pretrain.py --preset debug --data DIR_OR_MANIFEST --out DIR --max-steps N
    python recipes/fisher_pretrain.py --preset debug --data ... --out DIR --max-steps 2N --resume
    rmis eval fisher-tiny --suite synth --checkpoint DIR/encoder.pt

Every config field is a command-line option (``--batch-size 4``, ``--lr 1e-3`` ...).

Method, per step:

1. a batch of random ``crop_seconds`` crops is resampled to one rate ``sr_batch``, drawn from the
   multiples of ``f_base`` below ``f_max`` (sinc resampler of :mod:`rmis.audio`);
2. log-STFT (25 / 10 ms windows), normalised, cut into ``w = f_base * 25 ms`` bin sub-bands that
   go into the batch axis (``FisherViT.bands``);
3. teacher (EMA of the student) encodes every whole band; the instance-normalised outputs of all
   its layers, averaged, are the patch targets ``t_patch``, their mean over patches ``t_band``;
4. each band is cloned ``c`` times (``c * bands <= m_b``), each clone gets its own inverse block
   mask (blocks of ``m_l`` x ``m_l`` patches kept, 80 % masked); the student sees only the kept
   patches plus CLS; its CLS output is ``s_band``; its patch outputs go back on the grid, masked
   places filled with N(0, 1) noise, and the CNN decoder makes ``s_patch``;
5. ``L = ||s_band - t_band||^2 + ||s_patch - t_patch||^2`` (patch term on masked places), AdamW,
   linear warm-up + cosine decay, gradient clipping, then the EMA update of the teacher.

Randomness that decides *what* is trained on (file order, crop offsets, ``sr_batch``, masks,
decoder noise) is a pure function of ``(seed, step)`` or ``(seed, global sample index)``, so a
resumed run continues an uninterrupted one exactly and N processes with batch B train on the same
samples as one process with batch N * B.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from rmis.audio import resample
from rmis.errors import RMISError
from rmis.io import atomic_write_bytes, atomic_write_text
from rmis.models.fisher import FisherViT, log_spectrogram, official_cfg, variant_config

T_WIN = 0.025  # STFT window, s (paper 5.1)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")

# ------------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------------


@dataclass
class Config:
    # architecture (paper Table 2; 12 layers, 16 x 16 patches, post-norm, all variants)
    variant: str = "tiny"  # the released variant whose cfg layout encoder.pt takes
    embed_dim: int = 192
    num_heads: int = 3
    depth: int = 12
    f_base: int = 4000  # Hz; band width w = f_base * 25 ms bins
    f_max: int = 32000  # Hz; sr_batch is a multiple of f_base below f_max
    decoder_layers: int = 6  # CNN decoder (data2vec 2.0 / EAT style)
    decoder_kernel: int = 3
    # data
    data: str = ""  # folder (searched recursively) or rmis manifest CSV
    crop_seconds: float = 10.0
    batch_size: int = 24  # clips per process (GPU)
    workers: int = 4  # DataLoader worker processes
    # masking
    mask_ratio: float = 0.8
    block_size: int = 5  # m_l
    max_cloned_bands: int = 64  # m_b, per process
    max_clones: int = 16  # clones per band at most (EAT's clone batch)
    # optimisation
    lr: float = 5e-4
    warmup_steps: int = 40_000
    total_steps: int = 400_000  # length of the lr schedule (0: max_steps)
    max_steps: int = 400_000  # stop after this many steps (resume later with a larger one)
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 4.0
    ema_start: float = 0.9998  # teacher decay tau, ramped linearly ...
    ema_end: float = 0.99999  # ... to this value ...
    ema_end_step: int = 100_000  # ... at this step, constant afterwards
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    device: str = "auto"
    seed: int = 0
    # outputs
    out: str = "out-fisher"
    log_every: int = 10
    save_every: int = 1000
    probe_every: int = 5000  # quick k-NN probe on the synth suite; 0 = never
    probe_datasets: str = "synth_fd25k6,synth_ad"
    probe_cache: str = ""  # rmis cache folder holding synth/ (default: rmis's default)
    probe_runs: int = 2

    @property
    def band_width(self) -> int:
        return round(self.f_base * T_WIN)

    def arch(self) -> dict[str, Any]:
        return dict(
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            depth=self.depth,
            band_width=self.band_width,
        )

    def model_cfg(self) -> dict[str, Any]:
        """``cfg["model"]`` of the encoder, in the released checkpoints' layout."""
        return official_cfg(self.variant, **self.arch())


_TABLE2 = dict(warmup_steps=40_000, total_steps=400_000, max_steps=400_000, lr=5e-4)
PRESETS: dict[str, dict[str, Any]] = {
    # paper Table 2 (batch size and m_b per GPU; 4 GPUs in the paper)
    "tiny": dict(
        variant="tiny",
        embed_dim=192,
        num_heads=3,
        f_base=4000,
        batch_size=24,
        max_cloned_bands=64,
        block_size=5,
        **_TABLE2,
    ),
    "mini": dict(
        variant="mini",
        embed_dim=256,
        num_heads=4,
        f_base=4000,
        batch_size=32,
        max_cloned_bands=64,
        block_size=5,
        **_TABLE2,
    ),
    "small": dict(
        variant="small",
        embed_dim=384,
        num_heads=6,
        f_base=2000,
        batch_size=16,
        max_cloned_bands=128,
        block_size=2,
        **_TABLE2,
    ),
    # reduced for 2 CPU cores: 4 layers of width 64 (2 heads), 2 decoder layers, batch 8,
    # 4 clones, a short schedule and a fast teacher; tiny's bands (f_base 4 kHz, w = 100)
    "debug": dict(
        variant="tiny",
        embed_dim=64,
        num_heads=2,
        depth=4,
        f_base=4000,
        decoder_layers=2,
        batch_size=8,
        max_cloned_bands=64,
        max_clones=4,
        block_size=5,
        lr=1e-3,
        warmup_steps=20,
        total_steps=300,
        max_steps=300,
        ema_start=0.99,
        ema_end=0.999,
        ema_end_step=300,
        workers=0,
        log_every=1,
        save_every=100,
        probe_every=100,
        probe_datasets="synth_fd25k6",
    ),
}


def parse_config(argv: list[str] | None = None) -> tuple[Config, bool]:
    """Preset, then (with ``--resume``) the saved run's config, then explicit options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--resume", action="store_true", help="continue OUT/train_state.pt")
    for f in dataclasses.fields(Config):
        kind = type(f.default)
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, type=kind, default=None, metavar=kind.__name__.upper())
    args = p.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    given = {k: v for k, v in given.items() if v is not None}
    cfg = Config(**PRESETS[args.preset])
    if args.resume:
        state = Path(given.get("out", cfg.out)) / "train_state.pt"
        if not state.is_file():
            raise RMISError(f"--resume: {state} not found; run without --resume first")
        saved = torch.load(state, map_location="cpu", weights_only=True)["config"]
        cfg = Config(**saved)
    cfg = dataclasses.replace(cfg, **given)
    if not cfg.data:
        raise RMISError("give --data FOLDER_OR_MANIFEST (audio files to pre-train on)")
    return cfg, args.resume


# ------------------------------------------------------------------------------------------------
# data: random crops, one rate per batch, streamed by a DataLoader
# ------------------------------------------------------------------------------------------------


def list_files(source: str) -> list[tuple[str, int, int]]:
    """``(path, sample rate, frames)`` of every audio file of a folder or rmis manifest."""
    src = Path(source)
    if src.is_dir():
        paths = sorted(str(p) for p in src.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    elif src.is_file() and src.suffix.lower() == ".csv":
        from rmis.data.manifest import manifest_table

        paths = [str(p) for p in manifest_table(src)["path"]]
    else:
        raise RMISError(f"--data {source!r}: not a folder or a manifest .csv")
    if not paths:
        raise RMISError(f"--data {source!r}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    out = []
    for path in paths:
        try:
            info = sf.info(path)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise RMISError(
                f"cannot read audio file {path!r}: {exc}; remove it from --data"
            ) from None
        if info.frames == 0:
            raise RMISError(f"audio file {path!r} is empty; remove it from --data")
        out.append((path, int(info.samplerate), int(info.frames)))
    return out


def batch_rates(cfg: Config) -> list[int]:
    """The rates ``sr_batch`` is drawn from: multiples of f_base below f_max."""
    multiples = (k * cfg.f_base for k in range(1, cfg.f_max // cfg.f_base + 1))
    return [sr for sr in multiples if sr < cfg.f_max]


def n_bands(cfg: Config, sr: int) -> int:
    """Sub-bands of a spectrogram at ``sr`` (``FisherViT.bands``: short spectra are padded)."""
    n_bins = (25 * sr // 1000) // 2 + 1
    return max(1, n_bins // cfg.band_width)


def n_clones(cfg: Config, batch: int, sr: int) -> int:
    """Mask clones per band: at most ``max_clones``, and ``clones * bands <= m_b`` (at least 1)."""
    return max(1, min(cfg.max_clones, cfg.max_cloned_bands // (batch * n_bands(cfg, sr))))


class BatchKeys:
    """The batches of one process from ``start`` to ``stop``: lists of
    ``(file index, global sample index, sr_batch)``. Global sample ``n`` of step ``s`` is
    ``s * B * world + rank * B + j``; the file of ``n`` comes from a permutation of the corpus
    per epoch, ``sr_batch`` from ``(seed, step)``: nothing depends on the number of processes."""

    def __init__(self, cfg: Config, n_files: int, start: int, stop: int, rank: int, world: int):
        self.cfg, self.n_files, self.start, self.stop = cfg, n_files, start, stop
        self.rank, self.world = rank, world
        self.rates = batch_rates(cfg)
        self._perm: dict[int, np.ndarray] = {}

    def file_of(self, n: int) -> int:
        epoch, i = divmod(n, self.n_files)
        if epoch not in self._perm:
            rng = np.random.default_rng([self.cfg.seed, 11, epoch])
            self._perm = {epoch: rng.permutation(self.n_files)}
        return int(self._perm[epoch][i])

    def rate_of(self, step: int) -> int:
        rng = np.random.default_rng([self.cfg.seed, 13, step])
        return int(self.rates[rng.integers(len(self.rates))])

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        b = self.cfg.batch_size
        for step in range(self.start, self.stop):
            sr = self.rate_of(step)
            first = step * b * self.world + self.rank * b
            yield [(self.file_of(n), n, sr) for n in range(first, first + b)]


class Crops(torch.utils.data.Dataset):
    """One random crop per key, mean removed, resampled to the batch's rate."""

    def __init__(self, cfg: Config, files: list[tuple[str, int, int]]):
        self.cfg, self.files = cfg, files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[np.ndarray, int, int]:
        index, n, sr_batch = key
        path, sr, frames = self.files[index]
        need = round(self.cfg.crop_seconds * sr)
        rng = np.random.default_rng([self.cfg.seed, 17, n])
        start = int(rng.integers(max(1, frames - need + 1)))
        with sf.SoundFile(path) as fh:
            fh.seek(start)
            x = fh.read(min(need, frames - start), dtype="float32", always_2d=True).mean(axis=1)
        x = x - x.mean()
        x = np.pad(x, (0, need - len(x)))
        y = resample(x, sr, sr_batch)  # the benchmark's windowed-sinc resampler
        length = round(self.cfg.crop_seconds * sr_batch)
        y = np.pad(y[:length], (0, max(0, length - len(y))))
        return y.astype(np.float32), n, sr_batch


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # a worker decodes and resamples; the trainer owns the cores


def inverse_block_mask(rng: np.random.Generator, rows: int, cols: int, keep: int, block: int):
    """Indices (sorted) of ``keep`` kept patches of a ``rows x cols`` grid: blocks of
    ``block x block`` patches at random centres are kept until ``keep`` are, then random extra
    ones dropped (EAT's inverse block masking; the rest, ``1 - keep / (rows * cols)``, masked)."""
    kept = np.zeros((rows, cols), dtype=bool)
    while kept.sum() < keep:
        r = int(rng.integers(rows)) - block // 2
        c = int(rng.integers(cols)) - block // 2
        kept[max(r, 0) : r + block, max(c, 0) : c + block] = True
    idx = np.flatnonzero(kept)
    if len(idx) > keep:
        idx = np.sort(rng.choice(idx, size=keep, replace=False))
    return idx


class Collate:
    """Stack a batch; draw, per sample, the masks and the decoder's noise of its band clones."""

    def __init__(self, cfg: Config, grid: tuple[int, int], keep: int):
        self.cfg, self.grid, self.keep = cfg, grid, keep

    def __call__(self, items):
        waves, ids, rates = zip(*items)
        sr = rates[0]
        nb, c = n_bands(self.cfg, sr), n_clones(self.cfg, len(items), sr)
        rows, cols = self.grid
        keep, noise = [], []
        for n in ids:
            rng = np.random.default_rng([self.cfg.seed, 19, n])
            keep.append(
                [
                    inverse_block_mask(rng, rows, cols, self.keep, self.cfg.block_size)
                    for _ in range(nb * c)
                ]
            )
            shape = (nb * c, rows * cols, self.cfg.embed_dim)
            noise.append(rng.standard_normal(shape, dtype=np.float32))
        return {
            "wave": torch.from_numpy(np.stack(waves)),
            "sr": sr,
            "clones": c,
            "keep": torch.from_numpy(np.stack(keep).reshape(-1, self.keep)).long(),
            "noise": torch.from_numpy(np.concatenate(noise)),
        }


# ------------------------------------------------------------------------------------------------
# model: student encoder (the inference ViT) + CNN decoder; teacher = EMA copy of the encoder
# ------------------------------------------------------------------------------------------------


class ChannelNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [M, D, R, C]
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Decoder(nn.Module):
    """data2vec 2.0's 2-D decoder: residual conv -> LayerNorm -> GELU blocks on the patch
    grid, then a linear projection to the target width."""

    def __init__(self, dim: int, layers: int, kernel: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        groups = 16 if dim % 16 == 0 else 1
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=groups),
                ChannelNorm(dim),
                nn.GELU(),
            )
            for _ in range(layers)
        )
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [M, N, D] -> [M, N, D]
        m, _, d = x.shape
        x = x.transpose(1, 2).reshape(m, d, *self.grid)
        for blk in self.blocks:
            x = x + blk(x)
        return self.proj(x.reshape(m, d, -1).transpose(1, 2))


class Student(nn.Module):
    """The encoder on the kept patches, its CLS output and the decoded full grid."""

    def __init__(self, encoder: FisherViT, decoder: Decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, bands, keep, noise, clones):
        out, _ = self.encoder.forward_features(bands.repeat_interleave(clones, 0), keep)
        d = out.shape[-1]
        grid = noise.to(out.dtype).scatter(1, keep[:, :, None].expand(-1, -1, d), out[:, 1:])
        return out[:, 0], self.decoder(grid)


def init_weights(model: nn.Module) -> None:
    """data2vec 2.0 / MAE initialisation (the fixed position table is left alone)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for name, p in model.named_parameters():
        if name.endswith("extra_tokens"):
            nn.init.trunc_normal_(p, std=0.02)


@torch.no_grad()
def teacher_targets(teacher: FisherViT, bands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t_band [N, D], t_patch [N, P, D])`` from the whole, unmasked bands (data2vec 2.0 /
    EAT targets): every layer's patch outputs instance-normalised over the patches, averaged
    over all layers, then layer-normalised over the channels -> ``t_patch``; their mean over
    the patches -> ``t_band``."""
    _, layers = teacher.forward_features(bands)
    y = sum(F.instance_norm(h[:, 1:].float().transpose(1, 2)).transpose(1, 2) for h in layers)
    y = F.layer_norm(y / len(layers), y.shape[-1:])
    return y.mean(dim=1), y


def fisher_loss(s_band, s_patch, t_band, t_patch, keep):
    """``(L, L_band, L_patch)``: squared errors averaged over dimensions; the patch term over
    the masked places only (every sequence masks the same number)."""
    masked = torch.ones(s_patch.shape[:2], dtype=torch.bool, device=s_patch.device)
    masked.scatter_(1, keep, False)
    l_band = (s_band.float() - t_band).pow(2).mean()
    l_patch = (s_patch.float() - t_patch).pow(2).mean(dim=-1)[masked].mean()
    return l_band + l_patch, l_band, l_patch


def lr_at(cfg: Config, step: int) -> float:
    """Linear warm-up to the peak, then cosine decay to 0 at ``total_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    total = cfg.total_steps or cfg.max_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def ema_at(cfg: Config, step: int) -> float:
    if step >= cfg.ema_end_step:
        return cfg.ema_end
    return cfg.ema_start + (cfg.ema_end - cfg.ema_start) * step / cfg.ema_end_step


# ------------------------------------------------------------------------------------------------
# quick k-NN probe on the synthetic suite (rank 0), through rmis's own scoring
# ------------------------------------------------------------------------------------------------


class Probe:
    def __init__(self, cfg: Config, device: torch.device):
        from rmis.audio import load_windows
        from rmis.evaluate import default_cache_dir, synth_suite

        cache = Path(cfg.probe_cache) if cfg.probe_cache else default_cache_dir()
        names = [n for n in cfg.probe_datasets.split(",") if n]
        self.sets = []
        for ds in synth_suite(names, cache):
            files = zip(ds.table["file"], ds.table["path"])
            wins = {f: load_windows(p, ds.spec.window_seconds, None) for f, p in files}
            self.sets.append((ds, wins))
        self.runs, self.device = cfg.probe_runs, device

    @torch.no_grad()
    def __call__(self, encoder: FisherViT) -> dict[str, float]:
        from rmis.scoring import score_table

        was = encoder.training
        encoder.eval()
        out = {}
        for ds, wins in self.sets:
            emb = {}
            for f, (w, sr) in wins.items():
                x = torch.from_numpy(w).to(self.device)
                emb[f] = encoder(log_spectrogram(x, sr)).float().mean(0).cpu().numpy()
            spec = ds.spec
            body = score_table(
                ds.table.drop(columns="path"),
                emb,
                protocol=spec.protocol,
                classes=list(spec.classes) or None,
                test_size=spec.test_size or 0.5,
                runs=self.runs,
                where=spec.name,
            )
            out[spec.name] = float(body["score"])
        encoder.train(was)
        out["mean"] = float(np.mean(list(out.values())))
        return out


# ------------------------------------------------------------------------------------------------
# checkpoints and logs
# ------------------------------------------------------------------------------------------------


def save_torch(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def write_encoder(cfg: Config, encoder: FisherViT, out: Path) -> None:
    """``encoder.pt`` in the official inference format (student encoder only)."""
    save_torch({"cfg": {"model": cfg.model_cfg()}, "model": cpu_state(encoder)}, out / "encoder.pt")


def read_log(path: Path, upto: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto]


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    tr = [r for r in rows if "loss" in r]
    for key in ("loss", "loss_band", "loss_patch"):
        axes[0].plot([r["step"] for r in tr], [r[key] for r in tr], label=key)
    axes[0].set_yscale("log")
    axes[1].plot([r["step"] for r in tr], [r["lr"] for r in tr], label="lr")
    axes[1].plot([r["step"] for r in tr], [r["ema"] for r in tr], label="EMA decay")
    axes[1].set_yscale("log")
    pr = [r for r in rows if "probe" in r]
    for key in pr[0]["probe"] if pr else {}:
        axes[2].plot([r["step"] for r in pr], [r["probe"][key] for r in pr], marker="o", label=key)
    for ax, title in zip(axes, ("loss", "schedules", "k-NN probe (synth), %")):
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    cfg, resume = parse_config(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    master = rank == 0
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision in ("bf16", "fp16") and device.type != "cuda":
        raise RMISError(f"--precision {precision} needs a CUDA device; use fp32 on {device}")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    out = Path(cfg.out)
    if master:
        out.mkdir(parents=True, exist_ok=True)

    # model
    torch.manual_seed(cfg.seed)
    encoder = FisherViT(variant_config(cfg.variant, **cfg.arch()))
    grid = encoder.grid()
    decoder = Decoder(cfg.embed_dim, cfg.decoder_layers, cfg.decoder_kernel, grid)
    init_weights(encoder)
    init_weights(decoder)
    teacher = copy.deepcopy(encoder).requires_grad_(False)
    student = Student(encoder, decoder).to(device)
    teacher.to(device).eval()
    decay, no_decay = [], []
    for name, p in student.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name.endswith("extra_tokens") else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
    )
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    step = 0
    if resume:
        st = torch.load(out / "train_state.pt", map_location="cpu", weights_only=True)
        encoder.load_state_dict(st["student"])
        decoder.load_state_dict(st["decoder"])
        teacher.load_state_dict(st["teacher"])
        opt.load_state_dict(st["optimizer"])
        scaler.load_state_dict(st["scaler"])
        step = int(st["step"])
        torch.set_rng_state(st["rng"]["torch"])
        rs = st["rng"]
        np.random.set_state(("MT19937", rs["numpy"].numpy().astype(np.uint32), *rs["numpy_pos"]))
        random.setstate((rs["python"][0], tuple(rs["python"][1]), rs["python"][2]))
    model = student
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None
        )

    def save_state() -> None:
        np_state, py_state = np.random.get_state(), random.getstate()
        write_encoder(cfg, encoder, out)
        save_torch(
            {
                "config": dataclasses.asdict(cfg),
                "step": step,
                "world_size": world,
                "student": cpu_state(encoder),
                "teacher": cpu_state(teacher),
                "decoder": cpu_state(decoder),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "scheduler": {"kind": "linear warm-up + cosine", "step": step},
                "data": {"next_step": step, "global_batch": cfg.batch_size * world},
                "rng": {
                    "torch": torch.get_rng_state(),
                    "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
                    "numpy_pos": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
                    "python": [py_state[0], list(py_state[1]), py_state[2]],
                },
            },
            out / "train_state.pt",
        )

    log_rows = read_log(out / "log.jsonl", step) if (master and resume) else []
    if master:
        atomic_write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in log_rows))
    log_fh = open(out / "log.jsonl", "a", encoding="utf-8") if master else None

    def log(row: dict[str, Any]) -> None:
        log_rows.append(row)
        log_fh.write(json.dumps(row) + "\n")
        log_fh.flush()

    if cfg.max_steps <= step:  # e.g. --max-steps 0: write the (random) encoder and stop
        if master:
            save_state()
            plot_curves(log_rows, out / "curves.png")
            print(f"wrote {out / 'encoder.pt'} at step {step}", file=sys.stderr)
        if world > 1:
            dist.destroy_process_group()
        return

    # data
    files = list_files(cfg.data)
    keep = round(grid[0] * grid[1] * (1 - cfg.mask_ratio))
    loader = torch.utils.data.DataLoader(
        Crops(cfg, files),
        batch_sampler=BatchKeys(cfg, len(files), step, cfg.max_steps, rank, world),
        collate_fn=Collate(cfg, grid, keep),
        num_workers=cfg.workers,
        worker_init_fn=_one_thread,
        persistent_workers=False,
    )
    probe = Probe(cfg, device) if (master and cfg.probe_every > 0) else None
    if master:
        print(
            f"FISHER pre-training: {len(files)} files, world {world}, "
            f"batch {cfg.batch_size}/process, "
            f"{sum(p.numel() for p in encoder.parameters()) / 1e6:.2f} M encoder parameters, "
            f"steps {step} -> {cfg.max_steps}, {precision} on {device}",
            file=sys.stderr,
        )
        if probe is not None and step == 0:
            log({"step": 0, "probe": probe(encoder)})

    student.train()
    tick, bands_done = time.perf_counter(), 0
    for batch in loader:
        lr, tau = lr_at(cfg, step), ema_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        wave = batch["wave"].to(device, non_blocking=True)
        keep_idx = batch["keep"].to(device)
        noise = batch["noise"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            bands, nb = encoder.bands(log_spectrogram(wave, batch["sr"]))
            t_band, t_patch = teacher_targets(teacher, bands)
            c = batch["clones"]
            s_band, s_patch = model(bands, keep_idx, noise, c)
        loss, l_band, l_patch = fisher_loss(
            s_band,
            s_patch,
            t_band.repeat_interleave(c, 0),
            t_patch.repeat_interleave(c, 0),
            keep_idx,
        )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        gnorm = torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        with torch.no_grad():  # teacher <- tau teacher + (1 - tau) student
            t_params = list(teacher.parameters())
            s_params = [p.detach() for p in encoder.parameters()]
            torch._foreach_mul_(t_params, tau)
            torch._foreach_add_(t_params, s_params, alpha=1.0 - tau)
        step += 1
        bands_done += bands.shape[0] * world
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            stats = torch.stack([loss.detach(), l_band.detach(), l_patch.detach()]).float()
            if world > 1:
                dist.all_reduce(stats)
                stats /= world
            if master:
                dt = time.perf_counter() - tick
                row = {
                    "step": step,
                    "loss": stats[0].item(),
                    "loss_band": stats[1].item(),
                    "loss_patch": stats[2].item(),
                    "lr": lr,
                    "ema": tau,
                    "sr_batch": batch["sr"],
                    "bands": nb,
                    "clones": c,
                    "grad_norm": float(gnorm),
                    "bands_per_s": bands_done / dt,
                }
                if device.type == "cuda":
                    row["gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                log(row)
                print(
                    f"step {step}/{cfg.max_steps} loss {row['loss']:.4f} "
                    f"(band {row['loss_band']:.4f}, "
                    f"patch {row['loss_patch']:.4f}) lr {lr:.2e} tau {tau:.5f} sr {batch['sr']} "
                    f"{row['bands_per_s']:.1f} bands/s",
                    file=sys.stderr,
                )
            tick, bands_done = time.perf_counter(), 0
        if master and probe is not None and (step % cfg.probe_every == 0 or step == cfg.max_steps):
            res = probe(encoder)
            log({"step": step, "probe": res})
            figures = " ".join(f"{k} {v:.2f}" for k, v in res.items())
            print(f"step {step} probe {figures}", file=sys.stderr)
        if master and (step % cfg.save_every == 0 or step == cfg.max_steps):
            save_state()
            plot_curves(log_rows, out / "curves.png")
    if master:
        log_fh.close()
        print(
            f"wrote {out / 'encoder.pt'}, train_state.pt, log.jsonl, curves.png (step {step})",
            file=sys.stderr,
        )
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except RMISError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

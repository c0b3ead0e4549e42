"""PaSST (Koutini et al., "Efficient Training of Audio Transformers with Patchout",
Interspeech 2022): the AudioSet-trained PaSST-S as an RMIS encoder, in plain PyTorch (no timm).

Registered as ``passt-base`` (Table 3 row PaSST / base). Weights: the GitHub release file
``passt-s-f128-p16-s10-ap.476-swa.pt`` of kkoutini/PaSST, a plain torch state dict (no config,
no nesting) with the key names of the official ``models/passt.py``: ``patch_embed.proj.*``,
``cls_token``, ``dist_token``, ``new_pos_embed`` [1, 2, D], ``freq_new_pos_embed`` [1, D, 12, 1],
``time_new_pos_embed`` [1, D, 1, 99], ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,
mlp.fc2}.*``, ``norm.*``, and the AudioSet classifier ``head.0.*`` (LayerNorm), ``head.1.*``,
``head_dist.*``. It is read as published; the classifier tensors are dropped (declared in the
table), every other tensor must match the architecture exactly.

Per 10-s window at 32 kHz (320 000 samples, mean removed and zero-padded by the harness):

1. front-end :func:`rmis.frontends.passt_mel` -> ``[128, 1000]`` (pre-emphasis, centred STFT of
   a symmetric hann(800) in 1024, hop 320, power, 128 Kaldi-scale mel 0-15 kHz, log(x + 1e-5),
   (x + 4.5) / 5); the eval-mode path of the official ``AugmentMelSTFT`` (no masking, no
   random fmin/fmax);
2. 16 x 16 patches at stride 10 (Conv2d) -> a 12 x 99 grid (frames 996-999 fall outside it);
   the time and the frequency positional embeddings are added (time first, as the official
   code does), flattened frequency-major, then the class and the distillation tokens (each plus
   its ``new_pos_embed`` row) are prepended -> 1190 tokens;
3. 12 pre-norm ViT-B blocks (LayerNorm eps 1e-6, qkv with bias, softmax scale 64^-0.5, exact
   GELU), the final ``norm``;
4. the window embedding is the mean of the final norm's output over ALL 1190 tokens, class and
   distillation tokens included -> 768 (the paper's appendix A.3 / BASELINES.md).

Where this differs from the official code: RMIS's official harness ships no PaSST wrapper, and
the authors' own wrappers pool differently: ``PaSST.forward`` returns ``(cls + dist) / 2`` of
the final norm, and hear21passt's ``get_scene_embeddings`` concatenates that with the 527
logits (1295 values). The paper's pooling (mean over the whole sequence) is used here. Shorter
windows than 10 s (``rmis check-model``) use the first time positions, as the official eval
path does; a window longer than 10 s is cut to the 99 time patches the model knows (the
official ``models/passt.py`` does the same, with a warning; hear21passt crashes).

The release file holds no architecture config: the width, depth, MLP size, patch size and grid
are read from the tensor shapes; the number of heads is ``width / 64`` (ViT-B's head width;
``-o num_heads=N`` overrides it) and the patch stride is 10 (``-o stride=N``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rmis.encoders import Encoder
from rmis.errors import RMISError
from rmis.frontends import passt_mel
from rmis.models.layers import Attention, Mlp
from rmis.weights import Pretrained, load_strict, read_weights, register_family

SAMPLE_RATE = 32_000
WINDOW_SAMPLES = 320_000
N_MELS = 128
HOP = 320
HEAD_WIDTH = 64
RELEASE_URL = (
    "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/"
    "passt-s-f128-p16-s10-ap.476-swa.pt"
)


@dataclass(frozen=True)
class PasstConfig:
    """Architecture numbers; the defaults are the released PaSST-S (stride 10, 10-s input)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int = 3072
    patch_size: int = 16
    stride: int = 10
    freq_patches: int = 12
    time_patches: int = 99
    norm_eps: float = 1e-6

    @classmethod
    def from_state_dict(
        cls, state: dict[str, torch.Tensor], *, num_heads: int | None = None, stride: int = 10
    ) -> PasstConfig:
        """Read the architecture from the shapes of a release state dict."""
        need = ("cls_token", "patch_embed.proj.weight", "freq_new_pos_embed", "time_new_pos_embed")
        lacking = [k for k in need if k not in state]
        if lacking:
            raise RMISError(
                f"not a PaSST state dict: no {lacking} (the release file "
                "passt-s-f128-p16-s10-ap.476-swa.pt is a plain state dict with these keys)"
            )
        d = int(state["cls_token"].shape[-1])
        depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        fc1 = state.get("blocks.0.mlp.fc1.weight")
        heads = int(num_heads) if num_heads else max(1, d // HEAD_WIDTH)
        if d % heads:
            raise RMISError(f"PaSST: width {d} is not divisible by num_heads={heads}")
        cfg = cls(
            embed_dim=d,
            depth=depth,
            num_heads=heads,
            mlp_hidden=int(fc1.shape[0]) if fc1 is not None else 4 * d,
            patch_size=int(state["patch_embed.proj.weight"].shape[-1]),
            stride=int(stride),
            freq_patches=int(state["freq_new_pos_embed"].shape[2]),
            time_patches=int(state["time_new_pos_embed"].shape[3]),
        )
        grid = (N_MELS - cfg.patch_size) // cfg.stride + 1
        if grid != cfg.freq_patches:
            raise RMISError(
                f"PaSST: {N_MELS} mel bins in {cfg.patch_size}-patches at stride {cfg.stride} give "
                f"{grid} frequency patches, but the checkpoint has {cfg.freq_patches} frequency "
                "positions (set -o stride=N to the stride it was trained with)"
            )
        return cfg

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> PasstConfig:
        """The config of a table entry's ``arch`` (full-size shapes without a file)."""
        return cls(**{k: arch[k] for k in cls.__dataclass_fields__ if k in arch})


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: PasstConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.stride)


class Block(nn.Module):
    """Pre-norm ViT block: ``x + Attn(LN1(x))``, then ``x + MLP(LN2(x))``."""

    def __init__(self, cfg: PasstConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.attn = Attention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.mlp = Mlp(d, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PasstNet(nn.Module):
    """The PaSST transformer with the official parameter names (classifier heads left out)."""

    def __init__(self, cfg: PasstConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.cfg = cfg
        self.patch_embed = _PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, d))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, d, cfg.freq_patches, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, d, 1, cfg.time_patches))
        self.blocks = nn.Sequential(*(Block(cfg) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, 128, T]`` normalised mel -> the final norm's output ``[B, 2 + F * Tp, D]``."""
        return self.norm(self.blocks(self.tokens(mel)))

    def tokens(self, mel: torch.Tensor) -> torch.Tensor:
        """The blocks' input: class, distillation, then patch tokens ``[B, 2 + F * Tp, D]``."""
        x = self.patch_embed.proj(mel.unsqueeze(1))  # [B, D, F, Tp]
        if x.shape[2] != self.cfg.freq_patches:
            raise RMISError(
                f"PaSST: {mel.shape[1]} mel bins give {x.shape[2]} frequency patches, the model "
                f"has {self.cfg.freq_patches} frequency positions"
            )
        time_pos = self.time_new_pos_embed
        if x.shape[-1] > time_pos.shape[-1]:  # longer than 10 s: cut, as the official code does
            x = x[..., : time_pos.shape[-1]]
        x = x + time_pos[..., : x.shape[-1]]
        x = x + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)  # frequency-major: token f * Tp + t
        b = x.shape[0]
        cls = (self.cls_token + self.new_pos_embed[:, :1]).expand(b, -1, -1)
        dist = (self.dist_token + self.new_pos_embed[:, 1:]).expand(b, -1, -1)
        return torch.cat([cls, dist, x], dim=1)


class PaSST(Encoder):
    """PaSST adapter: 32-kHz windows -> mean of the final norm over all tokens ``[B, D]``."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        spec: Pretrained,
        checkpoint: str | None = None,
        num_heads: int | None = None,
        stride: int | None = None,
    ) -> None:
        super().__init__()
        source = str(checkpoint) if checkpoint else spec.sources[0]
        weights = read_weights(source, spec)
        self.cfg = PasstConfig.from_state_dict(
            weights.state_dict, num_heads=num_heads, stride=stride or spec.arch["stride"]
        )
        self.net = PasstNet(self.cfg)
        load_strict(self.net, weights.state_dict, str(weights.path))
        self.weights_sha256 = weights.sha256
        self.revision = weights.revision

    @property
    def min_samples(self) -> int:
        """Shortest window giving one patch column (``patch_size`` mel frames)."""
        return (self.cfg.patch_size - 1) * HOP + 2

    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        if sample_rate != SAMPLE_RATE:
            raise RMISError(f"passt: needs {SAMPLE_RATE}-Hz input, got {sample_rate} Hz")
        if windows.shape[-1] < self.min_samples:
            raise RMISError(
                f"passt: a window of {windows.shape[-1]} samples is shorter than one patch "
                f"({self.min_samples} samples at {SAMPLE_RATE} Hz)"
            )
        # the front-end always in fp32, as the official AugmentMelSTFT keeps its mel matmul
        # out of autocast (log(x + 1e-5) of a half-precision mel loses the quiet bins)
        with torch.autocast(windows.device.type, enabled=False):
            mel = passt_mel(windows.float())
        return self.net(mel).mean(dim=1)


def passt_params_millions(cfg: PasstConfig, num_classes: int = 527) -> float:
    """Parameters of a release file (transformer + AudioSet heads), in millions."""
    d, h = cfg.embed_dim, cfg.mlp_hidden
    block = 3 * d * d + 3 * d + d * d + d + 2 * d * h + h + d + 4 * d
    body = (
        d * cfg.patch_size**2
        + d  # patch projection
        + 4 * d  # cls, dist and their two position rows
        + d * (cfg.freq_patches + cfg.time_patches)
        + cfg.depth * block
        + 2 * d  # final norm
    )
    heads = 2 * d + 2 * (d * num_classes + num_classes)
    return (body + heads) / 1e6


ARCH = {
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "mlp_hidden": 3072,
    "patch_size": 16,
    "stride": 10,
    "freq_patches": 12,
    "time_patches": 99,
    "num_classes": 527,
}

TABLE = (
    Pretrained(
        name="passt-base",
        family="PaSST",
        variant="base",
        sources=(RELEASE_URL, "passt-s-f128-p16-s10-ap.476-swa.pt"),
        file_format="torch",
        state_path=(),
        config_path=(),
        drop=(r"^head\.", r"^head_dist\."),
        sample_rate=SAMPLE_RATE,
        frontend="PaSST mel: pre-emphasis, STFT 1024/hop 320 (hann 800), 128 kaldi mel 0-15 kHz, "
        "log, (x+4.5)/5 -> [128, 1000]",
        pooling="mean of the final norm over all 1190 tokens (class + distillation included)",
        dim=768,
        params_millions=round(passt_params_millions(PasstConfig.from_arch(ARCH)), 2),
        license="Apache-2.0",
        paper="Koutini et al., Efficient Training of Audio Transformers with Patchout, "
        "Interspeech 2022",
        arch=ARCH,
    ),
)

register_family(TABLE, PaSST)


def release_shapes(cfg: PasstConfig, num_classes: int = 527) -> dict[str, tuple[int, ...]]:
    """Every tensor of a release file and its shape (the transformer, then the AudioSet heads
    ``head.0`` (LayerNorm), ``head.1`` and ``head_dist``), computed without allocating."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in PasstNet(cfg).state_dict().items()}
    d = cfg.embed_dim
    shapes.update(
        {
            "head.0.weight": (d,),
            "head.0.bias": (d,),
            "head.1.weight": (num_classes, d),
            "head.1.bias": (num_classes,),
            "head_dist.weight": (num_classes, d),
            "head_dist.bias": (num_classes,),
        }
    )
    return shapes


def release_state_dict(
    cfg: PasstConfig, seed: int = 0, num_classes: int = 527
) -> dict[str, torch.Tensor]:
    """A random state dict in the release file's exact layout (classifier heads included)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, shape in release_shapes(cfg, num_classes).items():
        value = torch.randn(shape, generator=gen) * 0.02
        if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "head.0.weight")):
            value = value + 1.0
        elif name == "patch_embed.proj.weight":
            value = value * (1 / 0.02) / cfg.patch_size
        state[name] = value
    return state


def random_checkpoint(name: str, path: str | Path, seed: int = 0, **arch: Any) -> Path:
    """Write a random-weight file of variant ``name`` (``passt-base``) in the release format (a
    plain state dict with the AudioSet heads, ``torch.save``) to ``path``; returns the path.
    ``arch`` overrides :data:`ARCH` (e.g. ``embed_dim=128, depth=2`` for tests)."""
    spec = next((s for s in TABLE if s.name == name), None)
    if spec is None:
        raise RMISError(f"no PaSST variant {name!r} (known: {[s.name for s in TABLE]})")
    cfg = PasstConfig.from_arch({**spec.arch, **arch})
    torch.save(release_state_dict(cfg, seed), path)
    return Path(path)


__all__ = [
    "ARCH",
    "TABLE",
    "PaSST",
    "PasstConfig",
    "PasstNet",
    "passt_params_millions",
    "random_checkpoint",
    "release_shapes",
    "release_state_dict",
]

"""MuQ (Zhu et al., arXiv:2501.01108): the released ``OpenMuQ/MuQ-large-msd-iter`` encoder as a
thin plain-PyTorch port (no ``muq`` package, no ``transformers``).

Per window at 24 kHz (10-s windows of 240 000 samples):

1. front-end :func:`rmis.frontends.muq_mel`: mel spectrogram (n_fft 2048, hop 240, periodic Hann,
   centred with reflection, power 2, 128 HTK mel bands 0-12 kHz), dB without ``top_db``, the
   last frame dropped, ``(x - 6.768444971712967) / 18.417922652295623`` -> ``[128, 1000]``;
2. ``conv``: two residual 2-D conv blocks (3x3, stride 2 in frequency and ``2, 2`` in time for
   the 25-Hz label rate; BatchNorm, ReLU) -> ``[512, 32, 250]``, flattened channel-major per
   frame and projected to 1024 -> 250 tokens;
3. ``conformer``: the wav2vec2-conformer encoder of ``transformers`` (12 layers, 16 heads,
   FFN 4096 with Swish, macaron half-step FFNs, depthwise conv kernel 31 with BatchNorm, rotary
   positions), then its final LayerNorm;
4. the window embedding is the mean over the 250 tokens of that last hidden state -> 1024.

The release is a hub folder: ``config.json`` (the ``MuQConfig`` fields, ``w2v2_config`` nested)
and ``model.safetensors`` with every key under ``model.`` (``MuQ.model`` is the ``MuQModel``).
Every architecture number is read from ``config.json``; the keys are the official ones, loaded
strictly (the ``muq`` package's ``from_pretrained`` loads non-strictly: a key mismatch there
silently leaves random weights). Tensors of the release that the embedding never touches are
dropped by name, declared in :data:`TABLE` (``drop``):

* ``linear.*`` (the token-prediction head), ``cls_token``, ``quantizer_*`` / ``rvq.*`` (the
  pre-training targets) and ``recon_proj.*`` (reconstruction loss): training only;
* ``conformer.pos_conv_embed.*``: ``Wav2Vec2ConformerEncoder`` builds this convolutional position
  embedding but its ``forward`` never calls it (positions are rotary);
* ``conformer.embed_positions.inv_freq``: the rotary frequency table, a deterministic function of
  the config (``1 / base ** (2i / head_dim)``), rebuilt here so files saved with and without
  that buffer both load.

Quirks kept from the official code (``muq.muq.models.muq_model`` + ``transformers``' conformer):

* rotary positions are applied to the layer's normalised input BEFORE the query/key projections
  (``transformers``' wav2vec2-conformer does so), not to the projected queries and keys;
* every LayerNorm inside a conformer layer uses eps 1e-5 (``nn.LayerNorm`` default) whatever
  ``layer_norm_eps`` says; only the encoder's final LayerNorm takes ``layer_norm_eps``;
* the mel's last frame is dropped (``[..., :-1]``) and dB has no ``top_db``.

Paper vs official code: MuQ's own paper reports models pre-trained on up to 160 K hours; the
public checkpoint (the one RMIS Table 3 evaluates, "msd") was trained on the Million Song Dataset
only (its README says so). The release also holds the "iter" training's 8-codebook Mel-RVQ
(``rvq.*``) and an 8192-way head (``linear``); the test suite checks that the official tensor
list accounts for the released file's size. The official RMIS harness
ships no MuQ wrapper; this adapter does what ``MuQ.forward`` does (``hidden_states[-1]``, which
is the post-LayerNorm last hidden state) and mean-pools it as the paper's appendix A.3 says.
The ``muq`` package computes the mel in fp32 and casts it to fp16 when the input is fp16/bf16;
here the front-end always runs in fp32, outside any autocast (mel powers overflow fp16; the
benchmark's precision is fp32). ``muq`` on ``transformers`` 5
needs two patches (BASELINES.md); this port does not depend on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rmis.encoders import Encoder
from rmis.errors import RMISError
from rmis.frontends import muq_mel
from rmis.weights import Pretrained, load_strict, read_weights, register_family

SAMPLE_RATE = 24_000
#: ``stat`` of the release (``melspec_2048_mean`` / ``_std``); :func:`muq_mel` applies them.
MEL_MEAN = 6.768444971712967
MEL_STD = 18.417922652295623
#: Windows per forward pass inside :meth:`MuQEncoder.embed` (bounds the conv front's memory:
#: its first block holds ``512 x 64 x 500`` floats per 10-s window).
_CHUNK = 8

_ACTIVATIONS = {"swish": F.silu, "silu": F.silu, "gelu": F.gelu, "relu": F.relu}


@dataclass(frozen=True)
class MuQConfig:
    """Architecture numbers (defaults = the release's ``config.json``)."""

    n_mels: int = 128
    hop_length: int = 240
    label_rate: int = 25
    conv_dim: int = 512
    encoder_dim: int = 1024
    encoder_depth: int = 12
    num_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "swish"
    conv_kernel: int = 31
    layer_norm_eps: float = 1e-5
    position_embeddings_type: str = "rotary"
    rotary_base: float = 10_000.0

    @property
    def time_strides(self) -> tuple[int, int]:
        """Time strides of the two conv blocks (``strides_factory`` of the official code)."""
        n_fold = int(100 // self.label_rate)
        strides = {4: (2, 2), 2: (2, 1)}.get(n_fold)
        if strides is None:
            raise RMISError(
                f"MuQ: label_rate {self.label_rate} is not supported (the official code "
                "knows 25 and 50 Hz)"
            )
        return strides

    @classmethod
    def from_json(cls, cfg: dict[str, Any], where: str = "config.json") -> MuQConfig:
        """Read the release's ``config.json`` (``MuQConfig`` fields, ``w2v2_config`` nested);
        refuses settings this port (and the shared front-end) does not compute."""
        if not isinstance(cfg, dict):
            raise RMISError(f"{where}: MuQ needs the release's config.json (a JSON object)")
        features = list(cfg.get("features", ["melspec_2048"]))
        if features != ["melspec_2048"]:
            raise RMISError(f"{where}: MuQ features {features} unsupported (melspec_2048 only)")
        stat = cfg.get("stat") or {}
        for key, want in (("melspec_2048_mean", MEL_MEAN), ("melspec_2048_std", MEL_STD)):
            if key in stat and not math.isclose(float(stat[key]), want, rel_tol=1e-9):
                raise RMISError(
                    f"{where}: stat {key} = {stat[key]} differs from the release's {want} "
                    "that rmis.frontends.muq_mel applies"
                )
        if cfg.get("is_flash"):
            raise RMISError(f"{where}: is_flash=true (flash conformer) is not supported")
        w2v = dict(cfg.get("w2v2_config") or {})
        out = cls(
            n_mels=int(cfg.get("n_mels", 128)),
            hop_length=int(cfg.get("hop_length", 240)),
            label_rate=int(cfg.get("label_rate", 25)),
            conv_dim=int(cfg.get("conv_dim", 512)),
            encoder_dim=int(cfg.get("encoder_dim", 1024)),
            encoder_depth=int(cfg.get("encoder_depth", 12)),
            num_heads=int(w2v.get("num_attention_heads", 16)),
            intermediate_size=int(w2v.get("intermediate_size", 4096)),
            hidden_act=str(w2v.get("hidden_act", "swish")),
            conv_kernel=int(w2v.get("conv_depthwise_kernel_size", 31)),
            layer_norm_eps=float(w2v.get("layer_norm_eps", 1e-5)),
            position_embeddings_type=str(w2v.get("position_embeddings_type", "rotary")),
            rotary_base=float(w2v.get("rotary_embedding_base", 10_000)),
        )
        if (out.n_mels, out.hop_length) != (128, 240):
            raise RMISError(
                f"{where}: n_mels {out.n_mels} / hop_length {out.hop_length}: the MuQ front-end "
                "(rmis.frontends.muq_mel) is 128 bands at hop 240"
            )
        if out.position_embeddings_type not in ("rotary", "None", "none"):
            raise RMISError(
                f"{where}: position_embeddings_type {out.position_embeddings_type!r} is not "
                "supported (the release uses rotary)"
            )
        if out.hidden_act not in _ACTIVATIONS:
            raise RMISError(f"{where}: hidden_act {out.hidden_act!r} is not supported")
        if out.encoder_dim % out.num_heads or out.conv_kernel % 2 == 0:
            raise RMISError(f"{where}: encoder_dim / heads / conv kernel are inconsistent")
        out.time_strides  # noqa: B018 - validates label_rate
        return out


# --- conv front (muq.muq.modules.conv) ------------------------------------------------------


class Res2dModule(nn.Module):
    """3x3 conv-BN-ReLU-conv-BN plus a (strided conv-BN) shortcut, then ReLU."""

    def __init__(self, idim: int, odim: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(odim)
        self.conv2 = nn.Conv2d(odim, odim, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(odim)
        self.diff = idim != odim or stride[0] > 1
        if self.diff:
            self.conv3 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
            self.bn3 = nn.BatchNorm2d(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.diff:
            x = self.bn3(self.conv3(x))
        return F.relu(x + out)


class Conv2dSubsampling(nn.Module):
    """``[B, n_mels, T]`` -> ``[B, T', D]``: two :class:`Res2dModule` (stride 2 in frequency),
    then ``b c f t -> b t (c f)`` and a linear projection."""

    def __init__(self, cfg: MuQConfig) -> None:
        super().__init__()
        s0, s1 = cfg.time_strides
        self.conv = nn.Sequential(
            Res2dModule(1, cfg.conv_dim, (2, s0)), Res2dModule(cfg.conv_dim, cfg.conv_dim, (2, s1))
        )
        self.linear = nn.Linear(cfg.conv_dim * cfg.n_mels // 2 // 2, cfg.encoder_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv(mel.unsqueeze(1))  # [B, C, F', T']
        b, c, f, t = x.shape
        return self.linear(x.permute(0, 3, 1, 2).reshape(b, t, c * f))


# --- conformer (transformers' Wav2Vec2ConformerEncoder, inference path) ---------------------


class FeedForward(nn.Module):
    def __init__(self, cfg: MuQConfig) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(cfg.encoder_dim, cfg.intermediate_size)
        self.output_dense = nn.Linear(cfg.intermediate_size, cfg.encoder_dim)
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(self.act(self.intermediate_dense(x)))


class ConvolutionModule(nn.Module):
    """LayerNorm, pointwise conv to 2D + GLU, depthwise conv, BatchNorm, activation, pointwise."""

    def __init__(self, cfg: MuQConfig) -> None:
        super().__init__()
        d = cfg.encoder_dim
        self.layer_norm = nn.LayerNorm(d)
        self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(
            d, d, cfg.conv_kernel, padding=(cfg.conv_kernel - 1) // 2, groups=d, bias=False
        )
        self.batch_norm = nn.BatchNorm1d(d)
        self.pointwise_conv2 = nn.Conv1d(d, d, 1, bias=False)
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(x).transpose(1, 2)
        x = F.glu(self.pointwise_conv1(x), dim=1)
        x = self.act(self.batch_norm(self.depthwise_conv(x)))
        return self.pointwise_conv2(x).transpose(1, 2)


def rotate_inputs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int):
    """Rotary positions on ``x [B, T, D]`` per head (``transformers``' convention: the halves
    of each head are rotated, ``x * cos + cat(-x2, x1) * sin``); ``cos``/``sin`` ``[T, hd]``."""
    b, t, d = x.shape
    h = x.view(b, t, heads, d // heads)
    half = h.shape[-1] // 2
    rotated = torch.cat((-h[..., half:], h[..., :half]), dim=-1)
    out = h * cos[None, :, None, :] + rotated * sin[None, :, None, :]
    return out.reshape(b, t, d)


class SelfAttention(nn.Module):
    def __init__(self, cfg: MuQConfig) -> None:
        super().__init__()
        d = cfg.encoder_dim
        self.heads = cfg.num_heads
        self.linear_q = nn.Linear(d, d)
        self.linear_k = nn.Linear(d, d)
        self.linear_v = nn.Linear(d, d)
        self.linear_out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None):
        b, t, d = x.shape
        qk_in = x if rotary is None else rotate_inputs(x, *rotary, self.heads)

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.linear_q(qk_in)), split(self.linear_k(qk_in)), split(self.linear_v(x))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.linear_out(out.transpose(1, 2).reshape(b, t, d))


class ConformerLayer(nn.Module):
    """Macaron conformer block: ½ FFN, self-attention, conv module, ½ FFN, LayerNorm."""

    def __init__(self, cfg: MuQConfig) -> None:
        super().__init__()
        d = cfg.encoder_dim
        self.ffn1_layer_norm = nn.LayerNorm(d)
        self.ffn1 = FeedForward(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.self_attn = SelfAttention(cfg)
        self.conv_module = ConvolutionModule(cfg)
        self.ffn2_layer_norm = nn.LayerNorm(d)
        self.ffn2 = FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, rotary) -> torch.Tensor:
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        x = x + self.self_attn(self.self_attn_layer_norm(x), rotary)
        x = x + self.conv_module(x)
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        return self.final_layer_norm(x)


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: MuQConfig) -> None:
        super().__init__()
        self.rotary = cfg.position_embeddings_type == "rotary"
        hd = cfg.encoder_dim // cfg.num_heads
        # computed on the CPU in fp32 as ``transformers`` does (also when built on "meta")
        steps = torch.arange(0, hd, 2, device="cpu").float() / hd
        self.register_buffer("inv_freq", 1.0 / (cfg.rotary_base**steps), persistent=False)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.encoder_depth))
        self.layer_norm = nn.LayerNorm(cfg.encoder_dim, eps=cfg.layer_norm_eps)

    def rotary_tables(self, length: int, dtype: torch.dtype, device: torch.device):
        """``(cos, sin)`` ``[T, head_dim]`` computed in fp32 (as ``transformers`` does)."""
        inv_freq = self.inv_freq.to(device)
        t = torch.arange(length, device=device, dtype=inv_freq.dtype)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rotary = self.rotary_tables(x.shape[1], x.dtype, x.device) if self.rotary else None
        for layer in self.layers:
            x = layer(x, rotary)
        return self.layer_norm(x)


class MuQModel(nn.Module):
    """What the embedding uses of the official ``MuQModel`` (same attribute names, so the
    release's ``model.*`` keys load unchanged once the prefix is stripped)."""

    def __init__(self, cfg: MuQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv = Conv2dSubsampling(cfg)
        self.conformer = ConformerEncoder(cfg)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised mel ``[B, n_mels, T]`` -> last hidden state ``[B, T', D]``."""
        return self.conformer(self.conv(mel))


class MuQEncoder(Encoder):
    """MuQ encoder adapter (24 kHz; embedding = mean of the last hidden state)."""

    sample_rate = SAMPLE_RATE
    version = "1"

    def __init__(self, cfg: MuQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = MuQModel(cfg)

    @torch.no_grad()
    def embed(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        if sample_rate != SAMPLE_RATE:
            raise RMISError(f"MuQ takes {SAMPLE_RATE} Hz input, got {sample_rate} Hz")
        if windows.shape[-1] <= 1024:
            raise RMISError(
                f"MuQ: a window of {windows.shape[-1]} samples is too short for its centred "
                "2048-point STFT (more than 1024 samples are needed)"
            )
        dtype = next(self.model.parameters()).dtype
        out = []
        for chunk in windows.float().split(_CHUNK):
            # the front-end stays fp32 under fp16/bf16 autocast (mel powers overflow fp16)
            with torch.autocast(chunk.device.type, enabled=False):
                mel = muq_mel(chunk).to(dtype)  # [b, 128, T]
            out.append(self.model(mel).mean(dim=1).float())
        return torch.cat(out)


#: The paper's Table 3 row "MuQ / msd" (one released variant).
TABLE = (
    Pretrained(
        name="muq-msd",
        family="MuQ",
        variant="msd",
        sources=("hf://OpenMuQ/MuQ-large-msd-iter",),
        file_format="hf-folder",
        state_path=(),
        config_path=(),
        prefix="model.",
        drop=(
            r"^linear\.",
            r"^cls_token$",
            r"^quantizer_",
            r"^rvq\.",
            r"^recon_proj\.",
            r"^conformer\.pos_conv_embed\.",
            r"^conformer\.embed_positions\.inv_freq$",
        ),
        sample_rate=SAMPLE_RATE,
        frontend="muq_mel: STFT 2048/240 centred, 128 HTK mel 0-12 kHz, dB (no top_db), "
        "last frame dropped, (x - 6.768) / 18.418 -> [128, 1000]",
        pooling="mean of the last hidden state (after the conformer's final LayerNorm)",
        dim=1024,
        params_millions=316.3,
        license="CC-BY-NC-4.0 (weights), MIT (code)",
        paper="Zhu et al., MuQ, arXiv:2501.01108",
        arch={
            "n_mels": 128,
            "hop_length": 240,
            "label_rate": 25,
            "conv_dim": 512,
            "encoder_dim": 1024,
            "encoder_depth": 12,
            "w2v2_config": {
                "num_attention_heads": 16,
                "intermediate_size": 4096,
                "hidden_act": "swish",
                "conv_depthwise_kernel_size": 31,
                "layer_norm_eps": 1e-5,
                "position_embeddings_type": "rotary",
                "rotary_embedding_base": 10000,
            },
        },
    ),
)


def build(spec: Pretrained, checkpoint: str | None = None) -> MuQEncoder:
    """Read the release (folder, hub id or URL), build the port from its ``config.json`` (or,
    for a lone ``model.safetensors``, from ``spec.arch``) and load the weights strictly."""
    source = checkpoint or spec.sources[0]
    weights = read_weights(source, spec)
    # a bare model.safetensors without its config.json: the released variant's numbers
    config = weights.config if weights.config is not None else dict(spec.arch)
    cfg = MuQConfig.from_json(config, where=f"{weights.path}")
    encoder = MuQEncoder(cfg)
    load_strict(encoder.model, weights.state_dict, str(weights.path))
    encoder.weights_sha256 = weights.sha256
    encoder.revision = weights.revision
    return encoder


register_family(TABLE, build)


# --- random-weight releases (tests, benchmarks) -----------------------------------------------


def release_config(**arch: Any) -> dict[str, Any]:
    """A ``config.json`` with every ``MuQConfig`` field, as ``PyTorchModelHubMixin`` writes it
    (the nested ``w2v2_config`` holds the wav2vec2-conformer settings); the release's numbers,
    updated by ``arch``: top-level entries (``encoder_dim``, ``encoder_depth``, ``conv_dim``,
    ``codebook_size``, ``rvq_n_codebooks`` ...) and, under short names, the conformer's
    ``heads``, ``intermediate``, ``kernel``, ``pos_groups``, ``pos_kernel``."""
    arch = dict(arch)
    w2v2 = {
        "activation_dropout": 0.1,
        "attention_dropout": 0.1,
        "conformer_conv_dropout": 0.1,
        "conv_depthwise_kernel_size": arch.pop("kernel", 31),
        "hidden_act": "swish",
        "hidden_dropout": 0.1,
        "hidden_size": 1024,
        "intermediate_size": arch.pop("intermediate", 4096),
        "layer_norm_eps": 1e-5,
        "layerdrop": 0.0,
        "max_source_positions": 5000,
        "model_type": "wav2vec2-conformer",
        "num_attention_heads": arch.pop("heads", 16),
        "num_conv_pos_embedding_groups": arch.pop("pos_groups", 16),
        "num_conv_pos_embeddings": arch.pop("pos_kernel", 128),
        "num_hidden_layers": 24,
        "position_embeddings_type": "rotary",
        "rotary_embedding_base": 10000,
    }
    cfg = {
        "label_rate": 25,
        "num_codebooks": 1,
        "codebook_dim": 16,
        "codebook_size": 8192,
        "features": ["melspec_2048"],
        "hop_length": 240,
        "n_mels": 128,
        "conv_dim": 512,
        "encoder_dim": 1024,
        "encoder_depth": 12,
        "mask_hop": 0.4,
        "mask_prob": 0.6,
        "is_flash": False,
        "stat": {
            "melspec_2048_cnt": 14282760192,
            "melspec_2048_mean": MEL_MEAN,
            "melspec_2048_std": MEL_STD,
        },
        "w2v2_config": w2v2,
        "use_rvq_target": True,
        "use_vq_target": False,
        "use_encodec_target": False,
        "rvq_ckpt_path": None,
        "recon_loss_ratio": None,
        "resume_checkpoint": None,
        "rvq_n_codebooks": 8,
        "rvq_multi_layer_num": 1,
    }
    cfg.update(arch)
    return cfg


def official_shapes(cfg: dict) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every tensor of the official ``MuQ`` module's state dict (keys under ``model.``), read
    off ``MuQModel.__init__``, ``Conv2dSubsampling``, ``ResidualVectorQuantize`` and
    ``transformers``' ``Wav2Vec2ConformerEncoder`` (rotary; weight-normed positional conv)."""
    f32, i64 = torch.float32, torch.int64
    w = cfg["w2v2_config"]
    d, c, m = cfg["encoder_dim"], cfg["conv_dim"], cfg["n_mels"]
    hidden, k = w["intermediate_size"], w["conv_depthwise_kernel_size"]
    heads = w["num_attention_heads"]
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}

    def bn(name: str, n: int) -> None:
        for t in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.{t}"] = ((n,), f32)
        out[f"{name}.num_batches_tracked"] = ((), i64)

    def lin(name: str, i: int, o: int, bias: bool = True) -> None:
        out[f"{name}.weight"] = ((o, i), f32)
        if bias:
            out[f"{name}.bias"] = ((o,), f32)

    for b, cin in ((0, 1), (1, c)):
        p = f"model.conv.conv.{b}"
        for conv, ci in (("conv1", cin), ("conv2", c), ("conv3", cin)):
            out[f"{p}.{conv}.weight"] = ((c, ci, 3, 3), f32)
            out[f"{p}.{conv}.bias"] = ((c,), f32)
        for name in ("bn1", "bn2", "bn3"):
            bn(f"{p}.{name}", c)
    lin("model.conv.linear", c * m // 4, d)
    out["model.conformer.embed_positions.inv_freq"] = ((d // heads // 2,), f32)
    pk, pg = w["num_conv_pos_embeddings"], w["num_conv_pos_embedding_groups"]
    pc = "model.conformer.pos_conv_embed.conv"
    out[f"{pc}.bias"] = ((d,), f32)
    out[f"{pc}.parametrizations.weight.original0"] = ((1, 1, pk), f32)
    out[f"{pc}.parametrizations.weight.original1"] = ((d, d // pg, pk), f32)
    for ln in ("model.conformer.layer_norm",):
        out[f"{ln}.weight"], out[f"{ln}.bias"] = ((d,), f32), ((d,), f32)
    for i in range(cfg["encoder_depth"]):
        p = f"model.conformer.layers.{i}"
        for ln in (
            "ffn1_layer_norm",
            "self_attn_layer_norm",
            "ffn2_layer_norm",
            "final_layer_norm",
            "conv_module.layer_norm",
        ):
            out[f"{p}.{ln}.weight"], out[f"{p}.{ln}.bias"] = ((d,), f32), ((d,), f32)
        for ffn in ("ffn1", "ffn2"):
            lin(f"{p}.{ffn}.intermediate_dense", d, hidden)
            lin(f"{p}.{ffn}.output_dense", hidden, d)
        for proj in ("linear_q", "linear_k", "linear_v", "linear_out"):
            lin(f"{p}.self_attn.{proj}", d, d)
        out[f"{p}.conv_module.pointwise_conv1.weight"] = ((2 * d, d, 1), f32)
        out[f"{p}.conv_module.depthwise_conv.weight"] = ((d, 1, k), f32)
        bn(f"{p}.conv_module.batch_norm", d)
        out[f"{p}.conv_module.pointwise_conv2.weight"] = ((d, d, 1), f32)
    lin("model.linear", d, cfg["codebook_size"])
    out["model.cls_token"] = ((d,), f32)
    inp = 128 * int(100 // cfg["label_rate"])
    for q in range(cfg["rvq_n_codebooks"]):  # ResidualVectorQuantize(codebook_dim 16, 1024 codes)
        p = f"model.rvq.quantizers.{q}"
        out[f"{p}.in_proj.bias"] = ((16,), f32)
        out[f"{p}.in_proj.weight_g"] = ((16, 1, 1), f32)
        out[f"{p}.in_proj.weight_v"] = ((16, inp, 1), f32)
        out[f"{p}.out_proj.bias"] = ((inp,), f32)
        out[f"{p}.out_proj.weight_g"] = ((inp, 1, 1), f32)
        out[f"{p}.out_proj.weight_v"] = ((inp, 16, 1), f32)
        out[f"{p}.codebook.weight"] = ((1024, 16), f32)
        out[f"{p}.stale_counter"] = ((1024,), f32)
    return out


def random_release(folder: str | Path, cfg: dict[str, Any], seed: int = 0) -> Path:
    """Write the hub folder (``config.json`` = ``cfg`` + ``model.safetensors`` holding every
    tensor of :func:`official_shapes` under ``model.``) with random weights: LayerNorm/BN
    weights near 1, positive running variances, other tensors small; ``inv_freq`` as
    ``transformers`` computes it."""
    folder = Path(folder)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, dtype) in official_shapes(cfg).items():
        if dtype == torch.int64:
            state[key] = torch.tensor(123, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("inv_freq"):
            hd = shape[0] * 2
            state[key] = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        elif ("norm" in key or ".bn" in key) and key.endswith("weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 10
            state[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    from rmis.weights import write_hub_folder

    return write_hub_folder(folder, cfg, state)


def random_checkpoint(name: str, path: str | Path, seed: int = 0, **arch: Any) -> Path:
    """Write a random-weight hub folder of ``name`` (``muq-msd``) at ``path``
    (:func:`random_release` of :func:`release_config` with ``arch``); returns the folder."""
    if name != TABLE[0].name:
        raise RMISError(f"no MuQ variant {name!r} (known: {TABLE[0].name!r})")
    return random_release(path, release_config(**arch), seed)


__all__ = [
    "TABLE",
    "MuQConfig",
    "MuQEncoder",
    "MuQModel",
    "build",
    "official_shapes",
    "random_checkpoint",
    "random_release",
    "release_config",
    "rotate_inputs",
]

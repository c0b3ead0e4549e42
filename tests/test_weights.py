"""The weights layer: restricted unpickling, lazy safetensors, hub folders, strict loading,
family registration and the package-root exports."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import rmis.encoders as encoders
import rmis.weights as weights
from rmis.errors import RMISError
from rmis.weights import Pretrained, load_strict, read_weights, register_family, safe_torch_load

SPEC = Pretrained(name="toy-base", family="Toy", variant="base", sources=("Toy.pt",))


def _temp_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    return mod


@pytest.fixture
def gone_classes():
    """Classes defined in throw-away modules that are deleted before loading (so the loader
    cannot import them), plus a side-effect function that must never be called."""
    names = ["rmis_gone_cfg", "omegaconf_gone", "omegaconf_gone.nodes", "rmis_gone_evil"]
    cfg_mod, oc, oc_nodes, evil = (_temp_module(n) for n in names)
    calls: list[str] = []

    @dataclasses.dataclass
    class ModelConfig:
        embed_dim: int = 8
        depth: int = 2
        layers: tuple = (1, 2)

    class Mode(enum.Enum):
        FAST = "fast"

    class Plain:
        def __init__(self) -> None:
            self.a = 1
            self.mode = Mode.FAST

    class ContainerMetadata:  # omegaconf-like: containers and nodes carry metadata + parent
        def __init__(self) -> None:
            self.ref_type = ModelConfig
            self.flags = {}

    class DictConfig:
        def __init__(self, content: dict) -> None:
            self._metadata = ContainerMetadata()
            self._parent = None
            self._content = {}
            for k, v in content.items():
                if isinstance(v, DictConfig):
                    v._parent = self
                    self._content[k] = v
                else:
                    self._content[k] = AnyNode(v, self)

        def __getstate__(self):
            return dict(self.__dict__)

    class AnyNode:
        def __init__(self, value, parent) -> None:
            self._metadata = ContainerMetadata()
            self._parent = parent
            self._val = value

    class Evil:
        def __reduce__(self):
            return (evil.touch, ("called",))

    def touch(what: str) -> None:  # stands for os.system & co.
        calls.append(what)

    for mod, objs in (
        (cfg_mod, (ModelConfig, Mode, Plain)),
        (oc, (DictConfig, ContainerMetadata)),
        (oc_nodes, (AnyNode,)),
        (evil, (Evil, touch)),
    ):
        for obj in objs:
            obj.__module__ = mod.__name__
            obj.__qualname__ = obj.__name__
            setattr(mod, obj.__name__, obj)
    ns = types.SimpleNamespace(
        ModelConfig=ModelConfig, Plain=Plain, DictConfig=DictConfig, Evil=Evil, Mode=Mode
    )
    yield ns, calls, names
    for n in names:
        sys.modules.pop(n, None)


def _forget(names: list[str]) -> None:
    for n in names:
        sys.modules.pop(n, None)


def test_restricted_unpickler_turns_config_objects_into_plain_data(tmp_path, gone_classes):
    ns, calls, names = gone_classes
    state = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    shared = torch.randn(6)
    obj = {
        "cfg": ns.DictConfig(
            {"model": ns.DictConfig({"embed_dim": 8, "layers": [1, 2]}), "seed": 3}
        ),
        "args": argparse.Namespace(lr=0.1, name="x", mode=ns.Mode.FAST),
        "dc": ns.ModelConfig(),
        "plain": ns.Plain(),
        "evil": ns.Evil(),
        "model": state,
        "views": (shared, shared[2:]),
        "param": nn.Parameter(torch.ones(2)),
    }
    torch.save(obj, tmp_path / "ck.pt")
    _forget(names)  # the classes can no longer be imported
    with pytest.raises(Exception):  # noqa: B017 - torch refuses the file itself
        torch.load(tmp_path / "ck.pt", weights_only=True)
    out = safe_torch_load(tmp_path / "ck.pt")
    assert calls == []  # nothing of the file was executed
    assert out["cfg"] == {"model": {"embed_dim": 8, "layers": [1, 2]}, "seed": 3}
    assert out["args"] == {"lr": 0.1, "name": "x", "mode": "fast"}
    assert out["dc"] == {"embed_dim": 8, "depth": 2, "layers": (1, 2)}
    assert out["plain"] == {"a": 1, "mode": "fast"}
    assert out["evil"] == "called"  # the stand-in only recorded the argument
    for k, v in state.items():
        torch.testing.assert_close(out["model"][k], v, rtol=0, atol=0)
    a, b = out["views"]
    torch.testing.assert_close(b, shared[2:], rtol=0, atol=0)
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()  # still shared
    assert isinstance(out["param"], torch.Tensor) and out["param"].tolist() == [1.0, 1.0]


def test_plain_files_go_through_torch_and_bad_files_are_errors(tmp_path):
    sd = {"x": torch.randn(2, 2)}
    torch.save({"model": sd, "cfg": {"a": [1, 2]}}, tmp_path / "ok.pt")
    out = safe_torch_load(tmp_path / "ok.pt")
    assert out["cfg"] == {"a": [1, 2]} and torch.equal(out["model"]["x"], sd["x"])
    raw = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RMISError, match="trunc.pt.*truncated"):
        safe_torch_load(tmp_path / "trunc.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(RMISError, match="text.pt") as err:
        safe_torch_load(tmp_path / "text.pt")
    assert "weights_only=False" not in str(err.value)


def test_read_weights_torch_paths_prefix_drop_and_key_map(tmp_path):
    sd = {
        "encoder.blocks.0.w": torch.randn(2),
        "encoder.blocks.1.w": torch.randn(2),
        "encoder.decoder_pred.w": torch.randn(2),
        "head.w": torch.randn(2),
    }
    torch.save({"ckpt": {"state": sd}, "meta": {"config": {"dim": 2}}}, tmp_path / "f.pt")
    spec = dataclasses.replace(
        SPEC,
        state_path=("ckpt", "state"),
        config_path=("meta", "config"),
        prefix="encoder.",
        drop=(r"^decoder",),
        key_map=((r"^blocks\.", "layers."),),
    )
    w = read_weights(str(tmp_path / "f.pt"), spec)
    assert sorted(w.state_dict) == ["layers.0.w", "layers.1.w"]
    assert torch.equal(w.state_dict["layers.1.w"], sd["encoder.blocks.1.w"])
    assert w.config == {"dim": 2}
    assert w.sha256 == hashlib.sha256((tmp_path / "f.pt").read_bytes()).hexdigest()
    with pytest.raises(RMISError, match=r"no config entry .*\['ckpt', 'meta'\]"):
        read_weights(str(tmp_path / "f.pt"), dataclasses.replace(spec, config_path=("config",)))
    torch.save({"model": {"a": 1}}, tmp_path / "g.pt")
    with pytest.raises(RMISError, match="not a state dict of tensors"):
        read_weights(str(tmp_path / "g.pt"), SPEC)
    with pytest.raises(RMISError, match="does not exist"):
        read_weights(str(tmp_path / "absent.pt"), SPEC)


class _CountingOpen:
    """Wraps safetensors' safe_open to record which tensors are read."""

    def __init__(self, real, read: list[str]) -> None:
        self.real, self.read = real, read

    def __enter__(self):
        self.fh = self.real.__enter__()
        return self

    def __exit__(self, *exc):
        return self.real.__exit__(*exc)

    def keys(self):
        return self.fh.keys()

    def metadata(self):
        return self.fh.metadata()

    def get_tensor(self, key):
        self.read.append(key)
        return self.fh.get_tensor(key)


def test_safetensors_read_lazily_by_prefix(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    tensors = {
        "audio_encoder.blocks.0.w": torch.randn(3),
        "audio_encoder.norm.w": torch.randn(3),
        "llm.layers.0.w": torch.randn(1000),
        "llm.layers.1.w": torch.randn(1000),
    }
    save_file(tensors, tmp_path / "m.safetensors", metadata={"config": json.dumps({"d": 3})})
    read: list[str] = []
    real = weights._safe_open
    monkeypatch.setattr(weights, "_safe_open", lambda p, s: _CountingOpen(real(p, s), read))
    spec = dataclasses.replace(SPEC, file_format="safetensors", prefix="audio_encoder.")
    w = read_weights(str(tmp_path / "m.safetensors"), spec)
    assert sorted(w.state_dict) == ["blocks.0.w", "norm.w"]
    assert sorted(read) == ["audio_encoder.blocks.0.w", "audio_encoder.norm.w"]  # llm never read
    assert w.config == {"d": 3}
    with pytest.raises(RMISError, match="no tensor .* under the prefix 'video.'"):
        read_weights(str(tmp_path / "m.safetensors"), dataclasses.replace(spec, prefix="video."))


def test_hf_folder_single_and_sharded(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    single = tmp_path / "single"
    single.mkdir()
    save_file({"model.a": torch.ones(2), "model.b": torch.zeros(3)}, single / "model.safetensors")
    (single / "config.json").write_text(json.dumps({"hidden": 2}))
    spec = dataclasses.replace(SPEC, file_format="hf-folder", prefix="model.")
    w = read_weights(str(single), spec)
    assert sorted(w.state_dict) == ["a", "b"] and w.config == {"hidden": 2}
    w2 = read_weights(str(single / "model.safetensors"), spec)  # a file inside the folder
    assert w2.sha256 == w.sha256 and w2.config == {"hidden": 2}

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    save_file({"enc.a": torch.ones(2)}, sharded / "model-00001-of-00002.safetensors")
    save_file({"lm.b": torch.zeros(3)}, sharded / "model-00002-of-00002.safetensors")
    index = {
        "weight_map": {
            "enc.a": "model-00001-of-00002.safetensors",
            "lm.b": "model-00002-of-00002.safetensors",
        }
    }
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    (sharded / "config.json").write_text("{}")
    w = read_weights(str(sharded), dataclasses.replace(spec, prefix=""))
    assert sorted(w.state_dict) == ["enc.a", "lm.b"]
    enc_only = read_weights(str(sharded), dataclasses.replace(spec, prefix="enc."))
    assert list(enc_only.state_dict) == ["a"]  # only the first shard is opened
    one = hashlib.sha256((sharded / "model-00001-of-00002.safetensors").read_bytes()).hexdigest()
    assert (
        enc_only.sha256
        == hashlib.sha256(f"model-00001-of-00002.safetensors\t{one}\n".encode()).hexdigest()
        or enc_only.sha256 == one
    )

    # a hub id resolves to the snapshot folder
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(single))
    w = read_weights("hf://owner/toy", spec)
    assert sorted(w.state_dict) == ["a", "b"] and w.revision == "single"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RMISError, match="no model.safetensors"):
        read_weights(str(empty), spec)


def test_load_strict_lists_every_kind_of_mismatch():
    module = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3))
    good = {k: torch.randn_like(v) for k, v in module.state_dict().items()}
    load_strict(module, good, "toy.pt")
    assert torch.equal(module.state_dict()["0.weight"], good["0.weight"])
    bad = dict(good)
    bad.pop("1.bias")
    bad["0.weight"] = torch.zeros(5, 5)
    bad["decoder.x"] = torch.zeros(1)
    with pytest.raises(
        RMISError,
        match=r"toy.pt does not match the Sequential.*missing keys \['1.bias'\].*"
        r"unexpected keys \['decoder.x'\].*0.weight: checkpoint \(5, 5\) vs model \(3, 2\)",
    ):
        load_strict(module, bad, "toy.pt")


class _Toy(encoders.Encoder):
    def __init__(self, spec, checkpoint=None, scale: float = 1.0) -> None:
        super().__init__()
        self.spec, self.checkpoint, self.scale = spec, checkpoint, scale
        self.sample_rate = spec.sample_rate

    def embed(self, windows, sample_rate):
        return windows[:, :2] * self.scale


def test_register_family_fills_metadata_and_options(monkeypatch):
    encoders.list_encoders()  # built-ins registered first, into the real registry
    monkeypatch.setattr(encoders, "_REGISTRY", dict(encoders._REGISTRY))
    table = (
        dataclasses.replace(
            SPEC, frontend="fbank", pooling="mean", dim=2, params_millions=1.5, license="MIT"
        ),
        dataclasses.replace(SPEC, name="toy-large", variant="large", dim=4, sample_rate=32_000),
    )
    register_family(table, _Toy)
    info = encoders.get_encoder_info("toy-base")
    assert (info.family, info.variant, info.frontend, info.pooling, info.dim) == (
        "Toy",
        "base",
        "fbank",
        "mean",
        2,
    )
    assert info.params_millions == 1.5 and info.checkpoints == ("Toy.pt",)
    assert info.sample_rate == 16_000 and info.license == "MIT"
    enc = encoders.load_encoder("toy-large", checkpoint="x.pt", scale=2.0)
    assert enc.spec is table[1] and enc.checkpoint == "x.pt" and enc.scale == 2.0
    assert enc.info.sample_rate == 32_000
    with pytest.raises(RMISError, match=r"does not take option\(s\) \['bogus'\].*scale"):
        encoders.load_encoder("toy-base", bogus=1)
    assert [i.name for i in encoders.list_encoders("toy-*")] == ["toy-base", "toy-large"]
    assert [i.name for i in encoders.list_encoders("TOY-L*")] == ["toy-large"]
    with pytest.raises(RMISError, match="duplicate"):
        register_family((SPEC, SPEC), _Toy)

    def options(checkpoint=None, scale: float = 1.0):  # declared options
        """never called"""

    register_family((dataclasses.replace(SPEC, name="toy-opt"),), _Toy, options=options)
    assert encoders.load_encoder("toy-opt", scale=3.0).scale == 3.0


def test_fisher_release_with_config_objects_loads(tmp_path, gone_classes):
    """FISHER's released .pt is written by a loader that uses weights_only=False, so its cfg
    may hold omegaconf objects: such a file loads (strictly) through the real path."""
    from rmis.encoders import load_encoder
    from rmis.models.fisher import random_checkpoint

    ns, calls, names = gone_classes
    plain = random_checkpoint("tiny", tmp_path / "plain.pt", depth=1)
    obj = torch.load(plain, weights_only=True)
    model_cfg = obj["cfg"]["model"]
    image = ns.DictConfig(model_cfg["modalities"]["image"])
    top = ns.DictConfig(
        {
            **{k: v for k, v in model_cfg.items() if k != "modalities"},
            "modalities": ns.DictConfig({"image": image}),
        }
    )
    cfg = ns.DictConfig({"model": top, "common": ns.DictConfig({"seed": 1})})
    release = {"cfg": cfg, "model": obj["model"], "args": argparse.Namespace(x=1)}
    torch.save(release, tmp_path / "r.pt")
    _forget(names)
    a = load_encoder("fisher-tiny", checkpoint=str(plain))
    b = load_encoder("fisher-tiny", checkpoint=str(tmp_path / "r.pt"))
    x = torch.randn(1, 8_000)
    with torch.inference_mode():
        torch.testing.assert_close(a.embed(x, 16_000), b.embed(x, 16_000), rtol=0, atol=0)
    assert b.weights_sha256 == hashlib.sha256((tmp_path / "r.pt").read_bytes()).hexdigest()
    assert calls == []


def test_package_root_exports_lazily():
    code = (
        "import sys, rmis; assert 'torch' not in sys.modules, 'import rmis pulled in torch'; "
        "assert 'rmis.encoders' not in sys.modules; "
        "names = [i.name for i in rmis.list_encoders('fisher-*')]; "
        "assert names == ['fisher-mini', 'fisher-small', 'fisher-tiny'], names; "
        "assert rmis.load_encoder is __import__('rmis.encoders').encoders.load_encoder; "
        "assert 'load_encoder' in dir(rmis)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    import rmis

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rmis.nope  # noqa: B018


def test_list_models_shows_metadata_at_80_columns():
    from typer.testing import CliRunner

    from rmis.cli import app

    r = CliRunner().invoke(app, ["list", "models"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in r.output.splitlines()) <= 80
    for info in encoders.list_encoders():
        assert info.name in r.output
    assert "FISHER" in r.output and "hf://jiangab/FISHER-tiny-0723" in r.output
    r = CliRunner().invoke(app, ["list", "models", "fisher-t*"])
    assert r.exit_code == 0 and "fisher-tiny" in r.output and "fisher-mini" not in r.output
    r = CliRunner().invoke(app, ["list", "models", "nothing-*"])
    assert r.exit_code == 2 and "no registered model matches 'nothing-*'" in r.output


def test_paths_are_strings_or_paths(tmp_path):
    torch.save({"model": {"a": torch.ones(1)}}, tmp_path / "p.pt")
    assert torch.equal(safe_torch_load(str(tmp_path / "p.pt"))["model"]["a"], torch.ones(1))
    assert isinstance(read_weights(str(tmp_path / "p.pt"), SPEC).path, Path)

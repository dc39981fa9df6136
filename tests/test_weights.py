"""t2v_turbo.weights: the one checkpoint reader (every broken file is a one-line CheckpointError naming
it; a malicious pickle never runs), the strict loader's messages, the gradient-checkpoint wrapper, and
the model loaders built on them."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from t2v_turbo.errors import CheckpointError
from t2v_turbo.weights import (
    as_checkpoint_error,
    checkpoint_forward,
    load_strict,
    read_checkpoint,
    read_state_dict,
)

SD = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4)}


class Payload:
    """Unpickling this calls open(marker, "w"): the marker file appears iff the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------------------- broken files
def _missing(p: Path) -> Path:
    return p / "absent.pt"


def _folder(p: Path) -> Path:
    (p / "weights.pt").mkdir()
    return p / "weights.pt"


def _empty(suffix):
    def make(p: Path) -> Path:
        (p / f"empty{suffix}").touch()
        return p / f"empty{suffix}"

    return make


def _text(suffix):
    def make(p: Path) -> Path:
        (p / f"notes{suffix}").write_text("these are not weights\n")
        return p / f"notes{suffix}"

    return make


def _corrupt_safetensors(p: Path) -> Path:
    (p / "bad.safetensors").write_bytes(b"\xff" * 64)  # header length 2^64 - 1
    return p / "bad.safetensors"


def _truncated_safetensors(p: Path) -> Path:
    save_file(SD, str(p / "full.safetensors"))
    data = (p / "full.safetensors").read_bytes()
    (p / "cut.safetensors").write_bytes(data[:-10])
    return p / "cut.safetensors"


def _truncated_zip(p: Path) -> Path:
    torch.save(SD, p / "full.pt")
    data = (p / "full.pt").read_bytes()
    (p / "cut.pt").write_bytes(data[: len(data) // 2])
    return p / "cut.pt"


def _truncated_legacy(p: Path) -> Path:
    torch.save(SD, p / "full.ckpt", _use_new_zipfile_serialization=False)
    data = (p / "full.ckpt").read_bytes()
    (p / "cut.ckpt").write_bytes(data[: len(data) // 2])
    return p / "cut.ckpt"


BROKEN = {
    "missing file": (_missing, "checkpoint not found: "),
    "folder given for a file": (_folder, "expected a checkpoint file, got a folder: "),
    "empty .pt": (_empty(".pt"), "empty checkpoint file: "),
    "empty .safetensors": (_empty(".safetensors"), "empty checkpoint file: "),
    "text .pt": (_text(".pt"), "not a checkpoint file (neither safetensors nor a torch.save zip or pickle): "),
    "text .bin": (_text(".bin"), "not a checkpoint file (neither safetensors nor a torch.save zip or pickle): "),
    "text .safetensors": (
        _text(".safetensors"),
        "corrupt safetensors file (Error while deserializing header: header too large): ",
    ),
    "corrupt safetensors header": (
        _corrupt_safetensors,
        "corrupt safetensors file (Error while deserializing header: header too large): ",
    ),
    "truncated safetensors": (
        _truncated_safetensors,
        "corrupt safetensors file (Error while deserializing header: incomplete metadata, file not fully covered): ",
    ),
    "truncated zip": (_truncated_zip, "truncated or corrupt checkpoint (incomplete zip archive): "),
    "truncated legacy pickle": (_truncated_legacy, "truncated checkpoint (ends early): "),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_every_broken_file_is_one_line_naming_it(kind, tmp_path):
    make, prefix = BROKEN[kind]
    path = make(tmp_path)
    for read in (read_checkpoint, read_state_dict):
        with pytest.raises(CheckpointError) as e:
            read(path)
        assert str(e.value) == prefix + str(path)
        assert e.value.__context__ is None or e.value.__suppress_context__  # no chained library traceback


def _zip_payload(path: Path, marker: Path) -> None:
    torch.save({"state_dict": {"a": torch.ones(2)}, "callback": Payload(marker)}, path)


def _legacy_payload(path: Path, marker: Path) -> None:
    torch.save({"a": Payload(marker)}, path, _use_new_zipfile_serialization=False)


def _plain_pickle_payload(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"a": Payload(marker)}, protocol=4))


PAYLOADS = {"torch.save zip": _zip_payload, "torch.save legacy": _legacy_payload, "plain pickle": _plain_pickle_payload}


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin"])
@pytest.mark.parametrize("how", list(PAYLOADS))
def test_malicious_pickle_never_runs(how, suffix, tmp_path):
    path, marker = tmp_path / f"evil{suffix}", tmp_path / "PWNED"
    PAYLOADS[how](path, marker)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no "Detected pickle protocol" noise
        with pytest.raises(CheckpointError) as e:
            read_checkpoint(path)
    assert str(e.value) == f"not a weights-only checkpoint: {path}"
    assert not marker.exists()
    # control: the payload is real (a plain unpickler runs it)
    if how == "plain pickle":
        pickle.loads(path.read_bytes())
        assert marker.exists()


# ----------------------------------------------------------------------------- good files
def test_formats_unwrap_and_prefix(tmp_path):
    save_file(SD, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": SD, "epoch": 3}, tmp_path / "lightning.ckpt")
    torch.save({"module": {"module." + k: v for k, v in SD.items()}}, tmp_path / "ds.bin")
    torch.save(SD, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save([SD["a"], SD["b"]], tmp_path / "list.pt")
    save_file(SD, str(tmp_path / "safetensors_named.pt"))  # recognised by content, not name
    for name in ("w.safetensors", "lightning.ckpt", "ds.bin", "legacy.pt", "safetensors_named.pt"):
        sd = read_state_dict(tmp_path / name)
        assert set(sd) == set(SD) and all(torch.equal(sd[k], SD[k]) for k in SD), name
    assert set(read_checkpoint(tmp_path / "lightning.ckpt", unwrap=())) == {"state_dict", "epoch"}
    assert [t.shape for t in read_checkpoint(tmp_path / "list.pt")] == [(2, 3), (4,)]
    with pytest.raises(CheckpointError) as e:
        read_state_dict(tmp_path / "list.pt")
    assert str(e.value) == f"expected a dict of tensors, got a list: {tmp_path / 'list.pt'}"


def test_torchscript_only_when_asked(tmp_path):
    torch.jit.save(torch.jit.script(nn.Linear(2, 3)), tmp_path / "ts.pt")
    sd = read_state_dict(tmp_path / "ts.pt", torchscript=True)
    assert set(sd) == {"weight", "bias"} and sd["weight"].shape == (3, 2)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(tmp_path / "ts.pt")
    assert str(e.value) == f"a TorchScript archive, not a weights file: {tmp_path / 'ts.pt'}"


def test_library_errors_become_one_line(tmp_path):
    try:
        try:
            raise pickle.UnpicklingError("Weights only load failed.\nlong explanation")
        except pickle.UnpicklingError as inner:
            raise OSError("Unable to load weights from checkpoint file") from inner
    except OSError as e:
        assert str(as_checkpoint_error(e, tmp_path / "x.bin")) == f"not a weights-only checkpoint: {tmp_path / 'x.bin'}"
    try:
        raise OSError("outer") from ValueError("root cause\nmore")
    except OSError as e:
        assert str(as_checkpoint_error(e, "d", "VAE")) == "cannot load the VAE (ValueError: root cause): d"


# ----------------------------------------------------------------------------- strict loading
def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


def test_strict_loader_messages():
    net = _net()
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    del sd["1.bias"]
    sd["2.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(4, 5)
    with pytest.raises(CheckpointError) as e:
        load_strict(net, sd, what="UNet file", prefix="model.")
    assert str(e.value) == (
        "UNet file does not match the model: missing keys 1 (model.1.bias); unexpected keys 1 (model.2.weight); "
        "1 shape mismatches, first model.0.weight: file [4, 5] vs model [4, 3]"
    )
    many = {f"extra.{i}": torch.zeros(1) for i in range(7)}
    with pytest.raises(CheckpointError) as e:
        load_strict(nn.Linear(2, 2), {**nn.Linear(2, 2).state_dict(), **many}, what="x")
    assert str(e.value) == "x does not match the model: unexpected keys 7 (extra.0, extra.1, extra.2, extra.3, extra.4, ...)"


def test_strict_loader_ignore_allow_unexpected_and_values():
    src, dst = _net(), nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    sd = {**src.state_dict(), "head.weight": torch.zeros(1), "pos_ids": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected keys 2 \(head.weight, pos_ids\)$"):
        load_strict(dst, sd)
    with pytest.warns(UserWarning, match=r"checkpoint: ignoring 1 unexpected keys, e.g. \['head.weight'\]"):
        load_strict(dst, sd, ignore=["^pos_"], allow_unexpected=True)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_strict(dst, sd, ignore=["^pos_", lambda k: k.startswith("head.")])
    with pytest.raises(CheckpointError, match="missing keys 1 \\(1.bias\\)$"):
        load_strict(dst, {k: v for k, v in src.state_dict().items() if k != "1.bias"}, allow_unexpected=True)


# ----------------------------------------------------------------------------- gradient checkpointing
class _Counted(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 5)
        self.calls = 0

    def forward(self, x, scale=1.0):
        self.calls += 1
        return torch.tanh(self.lin(x)) * scale


def test_checkpoint_forward_recomputes_with_identical_gradients():
    torch.manual_seed(0)
    plain, ckpt = _Counted(), _Counted()
    ckpt.load_state_dict(plain.state_dict())
    keys = list(ckpt.state_dict())
    checkpoint_forward([ckpt, None])
    checkpoint_forward(ckpt)  # idempotent: one wrapper
    assert list(ckpt.state_dict()) == keys
    x = torch.randn(3, 5)
    grads = []
    for m in (plain, ckpt):
        m.calls = 0
        m.zero_grad()
        m(x, scale=2.0).square().sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    assert plain.calls == 1 and ckpt.calls == 2  # recomputed once in backward
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    # frozen module, input without grad, or no_grad: a plain call
    ckpt.calls = 0
    with torch.no_grad():
        ckpt(x)
    ckpt.requires_grad_(False)
    ckpt(x)
    xg = x.clone().requires_grad_(True)
    ckpt(xg).sum().backward()  # frozen weights but an input that needs grad: checkpointed
    assert ckpt.calls == 4 and xg.grad is not None
    checkpoint_forward(ckpt, enabled=False)
    assert "forward" not in ckpt.__dict__ and "_t2v_plain_forward" not in ckpt.__dict__
    layers = nn.ModuleList([_Counted(), _Counted()])
    checkpoint_forward(layers)  # a ModuleList: each layer
    assert all("_t2v_plain_forward" in m.__dict__ for m in layers) and "forward" not in layers.__dict__


# ----------------------------------------------------------------------------- model loaders
@pytest.fixture(scope="module")
def vc2_teacher():
    from t2v_turbo.models.videocrafter2 import VC2Config, VideoCrafter2

    torch.manual_seed(0)
    return VideoCrafter2(VC2Config.tiny()).eval()


def test_vc2_loader_failures_are_one_line(vc2_teacher, tmp_path):
    from t2v_turbo.models.registry import load_backbone
    from t2v_turbo.models.videocrafter2 import VideoCrafter2

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as e:
        VideoCrafter2.from_pretrained(tmp_path / "empty")
    assert str(e.value) == (
        f"{tmp_path / 'empty'}: no VideoCrafter2 weights in this folder: expected model.ckpt (the official "
        "checkpoint) or model.safetensors + config.json (written by save_pretrained)"
    )
    torch.save(vc2_teacher.unet.state_dict(), tmp_path / "unet.pt")
    for load in (VideoCrafter2.from_pretrained, load_backbone):
        with pytest.raises(CheckpointError) as e:
            load(tmp_path / "unet.pt")
        assert str(e.value).startswith("unet.pt holds only a UNet (or its LoRA), not a full VideoCrafter2 model")
        assert "\n" not in str(e.value)
    _corrupt_safetensors(tmp_path)
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "bad.safetensors")
    assert str(e.value) == f"corrupt safetensors file (Error while deserializing header: header too large): {tmp_path / 'bad.safetensors'}"
    marker = tmp_path / "PWNED"
    _zip_payload(tmp_path / "model.ckpt", marker)
    for path in (tmp_path / "model.ckpt", tmp_path):  # the file, and the folder holding it
        with pytest.raises(CheckpointError) as e:
            load_backbone(path)
        assert str(e.value) == f"not a weights-only checkpoint: {tmp_path / 'model.ckpt'}"
    assert not marker.exists()


def test_vc2_folder_with_model_ckpt_loads(vc2_teacher, tmp_path):
    from t2v_turbo.models.videocrafter2 import VideoCrafter2

    torch.save({"state_dict": vc2_teacher.official_state_dict()}, tmp_path / "model.ckpt")
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match=r"^not a VideoCrafter2 config \(JSONDecodeError: .*config.json$"):
        VideoCrafter2.from_pretrained(tmp_path)
    import json

    (tmp_path / "config.json").write_text(json.dumps(vc2_teacher.config.to_dict()))
    loaded = VideoCrafter2.from_pretrained(tmp_path)
    ref = vc2_teacher.official_state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.official_state_dict().items())


def test_diffusers_folder_failures_are_one_line(tmp_path):
    import shutil

    from t2v_turbo.models.diffusers_video import DiffusersVideoBackbone
    from t2v_turbo.models.tiny import tiny_modelscope

    tiny_modelscope().save_pretrained(tmp_path / "m")
    cases = {}
    shutil.copytree(tmp_path / "m", tmp_path / "no_vae")
    shutil.rmtree(tmp_path / "no_vae" / "vae")
    cases["no_vae"] = f"{tmp_path / 'no_vae'}: the VAE is missing ({tmp_path / 'no_vae' / 'vae'}); expected a diffusers-style folder with unet/, vae/, text_encoder/, tokenizer/"
    shutil.copytree(tmp_path / "m", tmp_path / "bad_unet")
    unet_file = tmp_path / "bad_unet" / "unet" / "diffusion_pytorch_model.safetensors"
    unet_file.write_bytes(b"\xff" * 64)
    cases["bad_unet"] = (
        f"cannot load the UNet (SafetensorError: Error while deserializing header: header too large): "
        f"{tmp_path / 'bad_unet' / 'unet'}"
    )
    shutil.copytree(tmp_path / "m", tmp_path / "evil_text")
    (tmp_path / "evil_text" / "text_encoder" / "model.safetensors").unlink()
    _zip_payload(tmp_path / "evil_text" / "text_encoder" / "pytorch_model.bin", tmp_path / "PWNED")
    cases["evil_text"] = f"not a weights-only checkpoint: {tmp_path / 'evil_text' / 'text_encoder' / 'pytorch_model.bin'}"
    for name, expected in cases.items():
        with pytest.raises(CheckpointError) as e:
            DiffusersVideoBackbone.from_pretrained(tmp_path / name)
        assert str(e.value) == expected, name
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(CheckpointError, match="^model folder not found: "):
        DiffusersVideoBackbone.from_pretrained(tmp_path / "absent")

"""Weights on disk and in modules: one checkpoint reader, one strict state-dict loader, one
gradient-checkpoint wrapper. Core plumbing: imports only torch, safetensors and `t2v_turbo.errors`.

- `read_checkpoint` reads `.safetensors` with safetensors and everything else (`.pt`, `.ckpt`,
  `.bin`, `.pth`) with `torch.load(weights_only=True)`, so no file can run code; optionally an
  OpenAI TorchScript archive's state dict. Every way a file can be unreadable (missing, a folder,
  empty, truncated, corrupt, text, holding Python objects) is a one-line `CheckpointError` naming
  the path; a refused pickle reads exactly "not a weights-only checkpoint: <path>".
- `load_strict` loads a state dict requiring both key sets to match and every shape to agree; its
  `CheckpointError` counts and shows (a few of) the missing and unexpected keys and the first shape
  mismatch, in the file's own key layout (`prefix`).
- `checkpoint_forward` makes a module recompute its activations in backward
  (`torch.utils.checkpoint`, non-reentrant), leaving its state-dict keys unchanged.
"""

from __future__ import annotations

import functools
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .errors import CheckpointError

__all__ = [
    "read_checkpoint",
    "read_state_dict",
    "as_checkpoint_error",
    "load_strict",
    "mismatch_error",
    "checkpoint_forward",
    "checkpointed_call",
]

# Lightning checkpoints keep the weights under "state_dict", DeepSpeed ones under "module"
DEFAULT_UNWRAP = ("state_dict", "module")
_SHOW = 5  # keys shown per list in a mismatch message


# ----------------------------------------------------------------------------- reading
def _first_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line[:200] or type(e).__name__


def _sniff(path: Path) -> str:
    """The file's format from its first bytes: "zip", "pickle", "safetensors" or "unknown"."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK"):
        return "zip"
    if head[:1] == b"\x80":  # pickle protocol >= 2 (torch.save's legacy format)
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{":  # 8-byte header length, then the JSON header
        return "safetensors"
    return "unknown"


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding `constants.pkl` (torch.save zips do not)."""
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") for n in z.namelist())


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt safetensors file ({_first_line(e)}): {path}") from None


def _torch_load(path: Path, mmap: bool) -> Any:
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol N": a plain pickle, refused below anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # torch's weights-only unpickler refuses every global it does not know (classes, functions):
        # the file holds Python objects, which are never unpickled here
        if "weights only" in str(e).lower():
            raise CheckpointError(f"not a weights-only checkpoint: {path}") from None
        raise CheckpointError(f"corrupt checkpoint ({_first_line(e)}): {path}") from None
    except (EOFError, struct.error):
        raise CheckpointError(f"truncated checkpoint (ends early): {path}") from None
    except Exception as e:  # torch.load's many ways to fail on a damaged file (RuntimeError, KeyError, ...)
        raise CheckpointError(f"corrupt checkpoint ({_first_line(e)}): {path}") from None


def read_checkpoint(
    path: str | Path, unwrap: Sequence[str] = DEFAULT_UNWRAP, torchscript: bool = False
) -> Any:
    """A checkpoint file's content (a dict of tensors, or e.g. a released list of LoRA tensors).

    Args:
        path: `.safetensors` (read with safetensors), or a `torch.save` file (`.pt`, `.ckpt`,
            `.bin`, `.pth`, zip or legacy format; zip files are memory-mapped).
        unwrap: top-level keys tried in order; the first one holding a dict is returned instead of
            the whole content (Lightning's "state_dict", DeepSpeed's "module", ViCLIP's "model").
        torchscript: accept an OpenAI TorchScript archive (e.g. CLIP's `ViT-L-14.pt`) and return
            its state dict (`torch.jit.load`; TorchScript code is not Python and runs no pickle).
    Raises:
        CheckpointError: one line naming `path`; "not a weights-only checkpoint: <path>" when the
            file holds Python objects besides tensors.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"expected a checkpoint file, got a folder: {path}")
    try:
        size = path.stat().st_size
        kind = "safetensors" if path.suffix == ".safetensors" else _sniff(path)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint ({_first_line(e)}): {path}") from None
    if size == 0:
        raise CheckpointError(f"empty checkpoint file: {path}")
    if kind == "safetensors":
        obj: Any = _load_safetensors(path)
    elif kind == "zip":
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"truncated or corrupt checkpoint (incomplete zip archive): {path}")
        if _is_torchscript(path):
            if not torchscript:
                raise CheckpointError(f"a TorchScript archive, not a weights file: {path}")
            try:
                obj = torch.jit.load(str(path), map_location="cpu").state_dict()
            except Exception as e:  # TorchScript raises RuntimeError subclasses with long messages
                raise CheckpointError(f"corrupt TorchScript archive ({_first_line(e)}): {path}") from None
        else:
            obj = _torch_load(path, mmap=True)
    elif kind == "pickle":
        obj = _torch_load(path, mmap=False)  # the legacy format cannot be memory-mapped
    else:
        raise CheckpointError(
            f"not a checkpoint file (neither safetensors nor a torch.save zip or pickle): {path}"
        )
    if isinstance(obj, dict):
        for key in unwrap:
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def as_checkpoint_error(e: BaseException, path: str | Path, what: str = "checkpoint") -> CheckpointError:
    """A library's loading exception (diffusers / transformers `from_pretrained`, ...) as one line.

    A refused pickle anywhere in the exception chain gives "not a weights-only checkpoint: <path>";
    anything else names `what`, the innermost exception and `path`.
    """
    chain, x = [], e
    while x is not None and x not in chain:
        chain.append(x)
        x = x.__cause__ or x.__context__
    if any(isinstance(x, pickle.UnpicklingError) and "weights only" in str(x).lower() for x in chain):
        return CheckpointError(f"not a weights-only checkpoint: {path}")
    root = chain[-1]
    return CheckpointError(f"cannot load the {what} ({type(root).__name__}: {_first_line(root)}): {path}")


def read_state_dict(
    path: str | Path, unwrap: Sequence[str] = DEFAULT_UNWRAP, torchscript: bool = False
) -> dict[str, Tensor]:
    """`read_checkpoint`, requiring a dict; a DDP wrapper's "module." prefix (on every key) is removed."""
    sd = read_checkpoint(path, unwrap, torchscript)
    if not isinstance(sd, dict):
        raise CheckpointError(f"expected a dict of tensors, got a {type(sd).__name__}: {path}")
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


# ----------------------------------------------------------------------------- strict loading
def _keys(keys: Sequence[str]) -> str:
    return f"{len(keys)} ({', '.join(keys[:_SHOW])}{', ...' if len(keys) > _SHOW else ''})"


def mismatch_error(
    what: str, missing: Sequence[str], unexpected: Sequence[str], shapes: Sequence[str] = ()
) -> CheckpointError:
    """The one-line error of a state-dict mismatch: counts and the first few missing / unexpected keys,
    and the first shape mismatch (`shapes`: "key: file [..] vs model [..]" strings)."""
    parts = []
    if missing:
        parts.append(f"missing keys {_keys(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_keys(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches, first {shapes[0]}")
    return CheckpointError(f"{what} does not match the model: " + "; ".join(parts))


def load_strict(
    module: nn.Module,
    sd: dict[str, Tensor],
    what: str = "checkpoint",
    prefix: str = "",
    ignore: Sequence[str | Callable[[str], bool]] = (),
    allow_unexpected: bool = False,
    assign: bool = False,
) -> None:
    """`module.load_state_dict(sd, strict=True)` with a one-line `CheckpointError` on any mismatch.

    Args:
        what: names the weights in the message ("UNet file", "hpsv2", ...).
        prefix: prepended to every key in the message (the key as the file spells it).
        ignore: checkpoint keys known to be unused (regexes searched in the key, or predicates),
            dropped before the comparison (training heads, persistent position-id buffers).
        allow_unexpected: other unexpected keys only warn (and are dropped); missing keys and shape
            mismatches always raise.
        assign: `load_state_dict(assign=True)` (the module may live on the meta device).
    """
    tests = [p if callable(p) else re.compile(p).search for p in ignore]
    if tests:
        sd = {k: v for k, v in sd.items() if not any(t(k) for t in tests)}
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [
        f"{prefix}{k}: file {list(sd[k].shape)} vs model {list(v.shape)}"
        for k, v in own.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or shapes or (unexpected and not allow_unexpected):
        shown = [] if allow_unexpected else [prefix + k for k in unexpected]
        raise mismatch_error(what, [prefix + k for k in missing], shown, shapes)
    if unexpected:
        warnings.warn(f"{what}: ignoring {len(unexpected)} unexpected keys, e.g. {unexpected[:5]}", stacklevel=2)
        sd = {k: v for k, v in sd.items() if k in own}
    module.load_state_dict(sd, strict=True, assign=assign)


# ----------------------------------------------------------------------------- gradient checkpointing
def checkpointed_call(module: nn.Module, forward: Callable, *args, **kwargs):
    """`forward(*args, **kwargs)`, recomputed in backward when autograd records it (grad mode on and
    an input tensor or one of `module`'s parameters requires grad); a plain call otherwise."""
    if torch.is_grad_enabled() and (
        any(isinstance(a, Tensor) and a.requires_grad for a in (*args, *kwargs.values()))
        or any(p.requires_grad for p in module.parameters())
    ):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def checkpoint_forward(modules: nn.Module | Iterable[nn.Module | None], enabled: bool = True) -> None:
    """Make each module's `forward` recompute its activations in backward (works in eval mode, state
    dict keys unchanged); `enabled=False` restores the plain forward. Idempotent.

    `modules`: one module, or several (a list, or an `nn.ModuleList`: each layer is wrapped, since a
    ModuleList has no forward of its own); `None` entries are skipped.
    """
    single = isinstance(modules, nn.Module) and not isinstance(modules, nn.ModuleList)
    for m in [modules] if single else modules:
        if m is None:
            continue
        plain = m.__dict__.get("_t2v_plain_forward")
        if enabled and plain is None:
            m._t2v_plain_forward = m.forward
            m.forward = functools.partial(checkpointed_call, m, m._t2v_plain_forward)
        elif not enabled and plain is not None:
            if getattr(plain, "__func__", None) is type(m).forward:
                del m.forward  # the class's forward again
            else:
                m.forward = plain
            del m._t2v_plain_forward

"""What every command shares: model / device / thread arguments, "load a model or exit 2", prompt
reading with one `#` rule, and the one-line error handling of `main`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default in `--help` and keeps description line breaks."""


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"t2v-turbo {prog}", description=description, formatter_class=HelpFormatter)


def default_threads() -> int:
    """One torch thread: on a small or busy machine two threads can be 10-15x slower than one (see
    README, Reliability); pass `--threads N` on a dedicated machine with more cores."""
    return 1


def add_compute_args(p: argparse.ArgumentParser) -> None:
    """--device and --threads."""
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, default=default_threads(), help="torch CPU threads")


def add_model_args(p: argparse.ArgumentParser, default: str | None = "turbo") -> None:
    """--model and --base."""
    p.add_argument("--model", default=default, help="a registered model name (turbo | vcm | teacher) or a checkpoint path")
    p.add_argument("--base", default=None, help="base model (VAE + text encoder) for a UNet-only or LoRA checkpoint")


def setup_compute(args: argparse.Namespace) -> str:
    """Apply --threads, resolve and check --device; returns the device string."""
    import torch

    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    device = getattr(args, "device", None)
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device!r} is not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA GPU is available on this machine")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {device!r} is not supported (use cpu, cuda or cuda:N)")
    return str(dev)


def load_model(spec: str, device: str = "cpu", base: str | None = None):
    """Load a model by name or path (every broken checkpoint is a one-line `CheckpointError`)."""
    from ..models.registry import load_backbone

    quiet_library_bars()
    return load_backbone(spec, device=device, **({"base": base} if base else {}))


def quiet_library_bars() -> None:
    """transformers / diffusers draw a "Loading weights" bar per component: noise for a CLI user."""
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except Exception:  # an old or missing transformers: nothing to silence
        pass
    try:
        import diffusers

        diffusers.utils.logging.disable_progress_bar()
    except Exception:
        pass


def one_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(text.split()) or type(e).__name__


def read_prompts(args_prompts: Sequence[str], prompt_file: str | None) -> list[str]:
    """Prompts from arguments plus a prompt file (one per line; blank and `#` lines skipped)."""
    from ..data.prompts import read_prompt_file

    prompts = [p for p in args_prompts if p.strip()]
    if prompt_file:
        prompts += read_prompt_file(prompt_file)
    if not prompts:
        raise InputError("give at least one non-empty prompt (arguments or --prompt-file)")
    return prompts


def check_out_dir(path: str | os.PathLike, create: bool = False) -> Path:
    """An output folder that can be created (no regular file in the way). Commands check it before
    any slow work and create it (`create=True`) only once they have something to write, so a
    failed command leaves nothing behind."""
    out = Path(path)
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"cannot create output folder {out}: {parent} is a file")
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create output folder {out}: {e.strerror}") from None
    return out


def run_command(fn, argv: list[str]) -> int:
    """Run a command's body: `T2VTurboError` -> one line and exit 2; a closed stdout pipe -> quiet exit."""
    from ..errors import T2VTurboError

    try:
        return int(fn(argv) or 0)
    except T2VTurboError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `t2v-turbo ... | head`: the reader left; do not print a traceback
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def warn_unknown_words(model, prompts: Sequence[str]) -> list[str]:
    """Warn (stderr, one line) about prompt words outside a model's closed vocabulary, for models
    that declare one (`model.vocabulary`, e.g. the MovingDigits world's ~20 words). Returns them."""
    import re

    vocab = getattr(model, "vocabulary", None)
    if not vocab:
        return []
    unknown = sorted({w for p in prompts for w in re.findall(r"[a-z0-9]+", p.lower())} - set(vocab))
    if unknown:
        print(
            f"warning: this model knows only its world's words; unknown: {', '.join(unknown[:12])}"
            + (" ..." if len(unknown) > 12 else ""),
            file=sys.stderr,
        )
    return unknown

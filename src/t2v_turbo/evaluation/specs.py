"""Building scorers from command-line specs (`NAME[:key=value,...]`) and reading real videos for FVD."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError, DataError, InputError, T2VTurboError


def parse_spec(spec: str) -> tuple[str, dict]:
    """'name' or 'name:key=value,key=value' -> (name, kwargs); values become int/float when they parse."""
    name, _, rest = spec.partition(":")
    kwargs: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InputError(f"bad option {item!r} in {spec!r}: expected key=value")
        for conv in (int, float):
            try:
                value = conv(value)
                break
            except ValueError:
                continue
        kwargs[key.strip()] = value
    if not name:
        raise InputError(f"bad spec {spec!r}: expected NAME or NAME:key=value,...")
    return name, kwargs


def build_scorer(spec: str):
    """A registered reward from a spec, frozen, in eval mode; unknown names or missing files -> ConfigError."""
    from ..rewards.base import build_reward

    name, kw = parse_spec(spec)
    frames = kw.pop("frames", None)
    try:
        model = build_reward(name, **kw)
    except FileNotFoundError as e:
        raise ConfigError(f"reward {spec!r}: {e}") from None
    except ValueError as e:
        if isinstance(e, T2VTurboError):
            raise
        raise ConfigError(f"reward {spec!r}: {e}") from None
    if frames is not None:
        model.num_frames = int(frames)
    return model.requires_grad_(False).eval()


def real_folder_videos(spec: str):
    """(prompts, seeds) -> the real videos of a folder (mp4 / gif), for FVD."""
    folder = Path(spec)
    if not folder.is_dir():
        raise InputError(f"--real must be a registered world or a folder of videos, got {spec!r}")

    def real_folder(prompts, seeds):
        from ..video_io import frames_to_tensor, read_video

        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mp4", ".gif"))
        if len(files) < 2:
            raise DataError(f"{folder}: FVD needs at least 2 real videos")
        videos = [frames_to_tensor(read_video(f)[0]) for f in files]
        t = min(v.shape[1] for v in videos)
        return torch.stack([v[:, :t] for v in videos])

    return real_folder

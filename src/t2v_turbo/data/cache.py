"""Latent cache: encode VAE latents and text embeddings once (`t2v-turbo precompute`), train from them.

Layout of a cache folder (documented format, version 1):

    index.json                 {"format": "t2v-turbo-latent-cache", "version": 1, "count": N,
                                "teacher": ..., "latent_shape": [c, T, h, w], "cond_shape": [L, D],
                                "dtype": ..., "shards": [{"file": ..., "count": n}], "skipped": {...}}
    shard-00000.safetensors    tensors "latents" (n, c, T, h, w) (VAE posterior sample x scaling
                               factor) and "cond" (n, L, D); metadata "captions" = JSON list of n strings
    uncond.safetensors         "uncond" (1, L, D): the empty-prompt embedding

Training with `data.source=cache data.path=FOLDER` skips the VAE encoder and the text encoder.
"""

from __future__ import annotations

import bisect
import json
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset, IterableDataset

from ..errors import ConfigError, DataError, InputError
from .loader import Skipped

FORMAT = "t2v-turbo-latent-cache"


class LatentCache(Dataset):
    """Map-style dataset over a cache folder; items {"latents", "cond", "prompt"}, keys (epoch, index)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index_file = self.path / "index.json"
        if not index_file.exists():
            raise DataError(
                f"{self.path} is not a latent cache (no index.json); build one with `t2v-turbo precompute`"
            )
        try:
            self.index = json.loads(index_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{index_file}: unreadable latent-cache index ({type(e).__name__}: {e})") from None
        if not isinstance(self.index, dict) or self.index.get("format") != FORMAT:
            raise DataError(f"{index_file}: not a {FORMAT} index")
        try:
            self.shards = list(self.index["shards"])
            self.offsets = [0]
            for s in self.shards:
                self.offsets.append(self.offsets[-1] + int(s["count"]))
                str(s["file"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{index_file}: malformed shard list ({type(e).__name__}: {e})") from None
        self._open: dict[int, tuple] = {}

    def __len__(self) -> int:
        return self.offsets[-1]

    def check_compatible(self, latent_shape, cond_shape) -> None:
        """Raise DataError when the cache was made for another model (latent or text-embedding shape)."""
        for what, ours, theirs in (("latent", latent_shape, self.index["latent_shape"]),
                                   ("text embedding", cond_shape, self.index["cond_shape"])):  # fmt: skip
            if list(ours) != list(theirs):
                raise DataError(
                    f"latent cache {self.path} holds {what}s of shape {list(theirs)}, the model needs "
                    f"{list(ours)}: re-run `t2v-turbo precompute` with this model (the cache was made with "
                    f"{self.index.get('teacher')!r})"
                )

    def _shard(self, k: int):
        if k not in self._open:
            from safetensors import safe_open

            f = safe_open(str(self.path / self.shards[k]["file"]), framework="pt")
            self._open[k] = (f, json.loads(f.metadata()["captions"]))
        return self._open[k]

    def uncond(self) -> torch.Tensor:
        from safetensors.torch import load_file

        return load_file(str(self.path / "uncond.safetensors"))["uncond"]

    def __getitem__(self, key: tuple[int, int]) -> dict | Skipped:
        _, i = key
        k = bisect.bisect_right(self.offsets, i) - 1
        j = i - self.offsets[k]
        try:
            f, captions = self._shard(k)
        except Exception as e:  # a missing or corrupt shard: its items are skipped, the rest train
            detail = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            return Skipped("undecodable", f"{self.shards[k]['file']}[{j}]", detail)
        if not captions[j].strip():
            return Skipped("empty caption", f"{self.shards[k]['file']}[{j}]")
        return {
            "latents": f.get_slice("latents")[j : j + 1][0].float(),
            "cond": f.get_slice("cond")[j : j + 1][0].float(),
            "prompt": captions[j],
        }


def _write_shard(path: Path, latents: list, conds: list, captions: list, dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".part")
    tensors = {
        "latents": torch.stack(latents).to(dtype).contiguous(),
        "cond": torch.stack(conds).to(dtype).contiguous(),
    }
    save_file(tensors, str(tmp), metadata={"captions": json.dumps(captions)})
    tmp.replace(path)


@torch.no_grad()
def precompute(
    cfg,
    out: str | Path,
    teacher,
    limit: int | None = None,
    batch_size: int = 8,
    shard_size: int = 1024,
    dtype: str = "float32",
    device: str = "cpu",
    printer=print,
) -> dict:
    """Encode the config's data source once with its teacher's VAE and text encoder; returns the index.

    Args:
        cfg: a `config.Config` (its data section is used; model.teacher is recorded).
        out: cache folder (created; an existing cache there is replaced).
        teacher: the loaded teacher backbone whose VAE and text encoder encode the data.
        limit: encode at most this many videos (required for an endless source such as moving-digits).
    """
    from . import DATA_SOURCES, build_dataset, clip_size
    from .loader import SkipCounter

    if cfg.data.source in ("cache", "prompts"):
        raise ConfigError(f"precompute reads videos: data.source={cfg.data.source} has none")
    if DATA_SOURCES.get(cfg.data.source).endless and not limit:
        raise InputError(f"the {cfg.data.source} source is endless: give --limit N")
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    teacher = teacher.to(device)
    size = clip_size(cfg.data, teacher)
    dataset = build_dataset(cfg, size, rank=0, world=1, epochs=1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.safetensors"):
        old.unlink()
    skips = SkipCounter(cfg.data.max_warnings, printer)
    g = torch.Generator().manual_seed(cfg.seed)
    shards, lat, cond, caps, pending = [], [], [], [], []
    count, start = 0, time.perf_counter()

    def flush_batch():
        videos = torch.stack([it["video"] for it in pending]).to(device, teacher.dtype)
        prompts = [it["prompt"] for it in pending]
        lat.extend(teacher.encode_video(videos, generator=g).float().cpu())
        cond.extend(teacher.encode_prompt(prompts).float().cpu())
        caps.extend(prompts)
        pending.clear()

    def flush_shard():
        name = f"shard-{len(shards):05d}.safetensors"
        _write_shard(out / name, lat, cond, caps, torch_dtype)
        shards.append({"file": name, "count": len(caps)})
        lat.clear(), cond.clear(), caps.clear()

    if isinstance(dataset, IterableDataset):
        items = iter(dataset)
    else:
        items = (dataset[(0, i)] for i in range(len(dataset)))
    for item in items:
        if isinstance(item, Skipped):
            skips.add(item)
            continue
        pending.append(item)
        count += 1
        if len(pending) == batch_size:
            flush_batch()
        if len(caps) >= shard_size:
            flush_shard()
        if limit and count >= limit:
            break
    if pending:
        flush_batch()
    if caps:
        flush_shard()
    if not count:
        raise DataError(f"no usable videos to encode ({skips.describe()})")
    from safetensors.torch import save_file

    save_file(
        {"uncond": teacher.encode_prompt([""]).float().cpu().contiguous()}, str(out / "uncond.safetensors")
    )
    index = {
        "format": FORMAT,
        "version": 1,
        "count": count,
        "teacher": cfg.model.teacher,
        "latent_shape": list(teacher.latent_shape(1, size[0])[1:]),
        "cond_shape": None,
        "dtype": dtype,
        "resolution": list(size[:3]),
        "fps": size[3],
        "resize": cfg.data.resize,
        "source": {"kind": cfg.data.source, "path": cfg.data.path},
        "shards": shards,
        "skipped": skips.summary(),
    }
    from safetensors import safe_open

    with safe_open(str(out / shards[0]["file"]), framework="pt") as f:
        index["cond_shape"] = list(f.get_slice("cond").get_shape()[1:])
    (out / "index.json").write_text(json.dumps(index, indent=2))
    printer(
        f"cached {count} videos in {len(shards)} shard(s) at {out} in {time.perf_counter() - start:.1f}s; "
        f"{skips.describe()}"
    )
    return index

"""`t2v-turbo precompute CONFIG [key=value ...] --out DIR`: encode a dataset once into a latent +
text-embedding cache (then train with `data.source=cache data.path=DIR`)."""

from __future__ import annotations

from ..errors import InputError
from . import _common as common


def main(argv: list[str]) -> int:
    from ..config import load_config
    from ..data.cache import precompute
    from ..training.roles import load_teacher

    p = common.parser("precompute", "Encode a dataset once into a latent cache.")
    p.add_argument("config", help="preset name or YAML path (its model.teacher and data section are used)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. data.path=videos.csv")
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--limit", type=int, default=None, help="encode at most N videos")
    p.add_argument("--batch-size", type=int, default=8, help="videos per encoder call")
    p.add_argument("--shard-size", type=int, default=1024, help="videos per shard file")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    common.add_compute_args(p)
    a = p.parse_intermixed_args(argv)
    for flag, value in (("--batch-size", a.batch_size), ("--shard-size", a.shard_size)):
        if value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    if a.limit is not None and a.limit < 1:
        raise InputError(f"--limit must be >= 1, got {a.limit}")
    device = common.setup_compute(a)
    cfg = load_config(a.config, a.overrides)
    common.check_out_dir(a.out)
    common.quiet_library_bars()
    teacher = load_teacher(cfg, device)
    precompute(cfg, a.out, teacher, a.limit, a.batch_size, a.shard_size, a.dtype, device)
    return 0

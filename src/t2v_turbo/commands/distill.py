"""`t2v-turbo distill CONFIG [key=value ...] [--dry-run]`: train a T2V-Turbo / VCM student.

Many GPUs: `accelerate launch -m t2v_turbo.cli distill CONFIG ...`."""

from __future__ import annotations

from . import _common as common


def main(argv: list[str]) -> int:
    from ..config import describe, list_presets, load_config
    from ..train import train
    from ..training.roles import check_reward_names

    p = common.parser(
        "distill", "Distill a few-step student (many GPUs: accelerate launch -m t2v_turbo.cli distill ...)."
    )
    p.add_argument("config", help=f"a preset name ({', '.join(list_presets())}) or a YAML path")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-4 train.max_steps=100")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config summary and global batch; exit")
    p.add_argument("--threads", type=int, default=common.default_threads(), help="torch CPU threads")
    a = p.parse_intermixed_args(argv)
    common.setup_compute(a)
    cfg = load_config(a.config, a.overrides)
    check_reward_names(cfg)
    if a.dry_run:
        print(describe(cfg))
        return 0
    common.quiet_library_bars()
    result = train(cfg)
    for name, path in (("student", result.student_dir), ("lora", result.lora_path), ("plot", result.plot)):
        if path is not None:
            print(f"{name}: {path}")
    return 0

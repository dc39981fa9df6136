"""The MovingDigits world as a plugin: `register()` adds what the world brings to the public
registries, exactly as a third-party model family would: its shipped models ("turbo", "vcm",
"teacher"; the flow-matching family "fm-teacher", "fm-vcm", "fm-turbo"), its data source ("moving-digits"), its rewards ("md-image", "md-video"), its prompt set
and judge (for `t2v-turbo eval`) and the `world` command. Declared in pyproject.toml under the
`t2v_turbo.plugins` entry-point group; nothing in the core library imports this package.
"""

from __future__ import annotations

SHIPPED_MODELS = ("turbo", "vcm", "teacher")


def _shipped_model(name: str):
    def factory(**kw):
        from ...errors import CheckpointError
        from .backbone import MovingDigitsBackbone
        from .models import ASSETS_DIR

        path = ASSETS_DIR / name
        if not (path / "unet").exists():
            raise CheckpointError(
                f"the shipped MovingDigits model {name!r} is missing from {path}; rebuild it with `t2v-turbo world build`"
            )
        model = MovingDigitsBackbone.from_pretrained(path, base=ASSETS_DIR, **kw)
        model.vocabulary = vocabulary()  # commands warn about words outside the world's captions
        return model

    factory.__doc__ = f"the shipped MovingDigits {name} (8x32x32, CPU)"
    return factory


FM_MODELS = {"fm-teacher": "fm_teacher", "fm-vcm": "fm_vcm", "fm-turbo": "fm_turbo"}  # name -> assets folder


def _shipped_fm_model(name: str):
    def factory(**kw):
        from ...errors import CheckpointError
        from .fm_backbone import MovingDigitsWanBackbone
        from .models import ASSETS_DIR

        path = ASSETS_DIR / FM_MODELS[name]
        if not (path / "transformer").is_dir():
            raise CheckpointError(
                f"the shipped MovingDigits model {name!r} is missing from {path}; rebuild it with "
                "`t2v-turbo world build --family fm`"
            )
        kw.setdefault("base", ASSETS_DIR)
        model = MovingDigitsWanBackbone.from_pretrained(path, **kw)
        model.vocabulary = vocabulary()
        return model

    factory.__doc__ = f"the shipped MovingDigits flow-matching {name[3:]} (Wan transformer, 8x32x32, CPU)"
    return factory


def _load_fm_backbone(path, **kw):
    from .fm_backbone import MovingDigitsWanBackbone

    return MovingDigitsWanBackbone.from_pretrained(path, **kw)


def vocabulary() -> frozenset[str]:
    from .dataset import caption_words

    return frozenset(caption_words())


def _load_backbone(path, **kw):
    from .backbone import MovingDigitsBackbone

    return MovingDigitsBackbone.from_pretrained(path, **kw)


def _data_source(cfg, size, rank, world, epochs):
    from .source import MovingDigitsClips

    return MovingDigitsClips(cfg.seed, cfg.data.paraphrase_prob, size)


def _prompts(n: int, seed: int) -> list[str]:
    from .dataset import prompt_subset

    return prompt_subset(n, seed=seed)


def _matches(prompts) -> bool:
    from .dataset import parse_caption

    try:
        for p in prompts:
            parse_caption(p)
    except ValueError:
        return False
    return bool(prompts)


def _judge():
    from .judge import get_judge

    return get_judge()


def _default_clip() -> str | None:
    from .models import ASSETS_DIR

    return "md-image" if (ASSETS_DIR / "reward_image").exists() else None


def _real_videos(prompts, seeds):
    import torch

    from .dataset import prompt_videos

    return torch.cat([prompt_videos(prompts, seed=int(s))[0] for s in seeds])


def register() -> None:
    from ...commands import COMMANDS
    from ...data import DATA_SOURCES, DataSource
    from ...evaluation.worlds import EVAL_WORLDS, EvalWorld
    from ...models.registry import BACKBONES, MODELS
    from . import rewards  # noqa: F401  (registers md-image / md-video)

    BACKBONES.register(
        "moving-digits", _load_backbone, help="MovingDigits world folders (position channels, frame tokens)", replace=True
    )
    for name in SHIPPED_MODELS:
        MODELS.register(name, _shipped_model(name), replace=True)
    BACKBONES.register(
        "moving-digits-fm",
        _load_fm_backbone,
        help="MovingDigits flow-matching folders (Wan transformer on the world's VAE and CLIP text)",
        replace=True,
    )
    for name in FM_MODELS:
        MODELS.register(name, _shipped_fm_model(name), replace=True)
    DATA_SOURCES.register(
        "moving-digits",
        DataSource(_data_source, endless=True, shuffle=False, needs_path=False),
        help="the MovingDigits world rendered on the fly (no files)",
        replace=True,
    )

    EVAL_WORLDS.register(
        "moving-digits",
        EvalWorld(
            prompts=_prompts,
            matches=_matches,
            judge=_judge,
            default_clip=_default_clip,
            real_videos=_real_videos,
            resolution=(8, 32, 32),
        ),
        help="MovingDigits captions ('a red digit 7 moving left'): judge, md-image alignment, rendered real videos",
        replace=True,
    )

    def world(argv):
        from .cli import cli

        return cli(argv)

    COMMANDS.register("world", world, help="build / evaluate the MovingDigits world", replace=True)

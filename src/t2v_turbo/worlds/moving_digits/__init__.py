"""MovingDigits: the built-in world that runs T2V-Turbo end to end on a CPU.

Modules:
    dataset: the fixed data spec (sklearn handwritten digits, 7 colors, 4 directions), captions,
        seeded datasets and `render`.
    judge: objective per-video scores (digit, color, direction, consistency), independent of the
        world's trained models.
    models: the world's tiny models (AutoencoderKL, CLIP text tower and tokenizer, UNetMotionModel
        teacher) and loaders for the shipped weights in `assets/moving_digits/`.
    rewards: the "md-image" and "md-video" reward models (HPSv2.1 / ViCLIP analogues).
    build: one function per training stage and `build_world`.
"""

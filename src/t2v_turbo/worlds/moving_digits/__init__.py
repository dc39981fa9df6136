"""MovingDigits: the built-in world that runs T2V-Turbo end to end on a CPU (a plugin, see plugin.py).

Modules:
    dataset: the fixed data spec (sklearn handwritten digits, 7 colors, 4 directions), captions,
        seeded datasets and `render`.
    judge: objective per-video scores (digit, color, direction, consistency), independent of the
        world's trained models.
    models: the world's tiny models (AutoencoderKL, CLIP text tower and tokenizer, UNetMotionModel)
        built in code, and loaders for the shipped weights in `assets/moving_digits/`.
    backbone: `MovingDigitsBackbone`, the diffusers video adapter plus position channels / frame tokens.
    rewards: the "md-image" and "md-video" reward models (HPSv2.1 / ViCLIP analogues);
        reward_training: their contrastive training and zero-shot accuracy.
    build: `build_world`, which runs the stages stage_vae, stage_text (tokenizer, rewards, text
        tower), stage_teacher and students (distilled by `t2v_turbo.train`).
    diagnostics: judge scores of a model's samples, word sensitivity of its denoiser.
    plugin, source, cli: registration, the training data source, `t2v-turbo world`.

Research notes (measured results, recipe history): docs/moving_digits/NOTES.md.
"""

"""Command-line entry points: `t2v-turbo COMMAND ...`.

Each command is a module here with `main(argv) -> exit code`: parse arguments, call library
functions, print. `COMMANDS` is a registry, so a plugin can add its own (the MovingDigits world adds
`world`). Modules are imported only when their command runs, so `--help` stays fast.
"""

from __future__ import annotations

from ..registry import Registry

COMMANDS: Registry = Registry("command")


def _command(name: str, help: str):
    def deco(fn):
        COMMANDS.register(name, fn, help=help)
        return fn

    return deco


@_command("generate", "few-step (or teacher) generation to mp4/gif")
def _generate(argv):
    from .generate import main

    return main(argv)


@_command("distill", "train a T2V-Turbo / VCM student from a YAML preset")
def _distill(argv):
    from .distill import main

    return main(argv)


@_command("precompute", "encode a dataset once into a latent + text-embedding cache")
def _precompute(argv):
    from .precompute import main

    return main(argv)


@_command("eval", "evaluate models and step counts on a prompt file")
def _eval(argv):
    from .eval import main

    return main(argv)


@_command("export-vbench", "write a VBench-ready video folder (and run VBench if installed)")
def _export_vbench(argv):
    from .export_vbench import main

    return main(argv)


@_command("demo", "start the local web demo (needs the [demo] extra)")
def _demo(argv):
    from .demo import main

    return main(argv)

"""Thin command line: `t2v-turbo COMMAND ...`. Each command's module parses its own arguments
(`cli(argv) -> exit code`) and is imported only when called, so `--help` stays fast."""

from __future__ import annotations

import importlib
import sys

from .errors import UserError

COMMANDS = {
    "generate": ("t2v_turbo.pipeline", "few-step (or teacher) generation to mp4/gif"),
    "distill": ("t2v_turbo.train", "train a T2V-Turbo / VCM student from a YAML preset"),
    "precompute": ("t2v_turbo.data.cache", "encode a dataset once into a latent + text-embedding cache"),
    "world": ("t2v_turbo.worlds.moving_digits.cli", "build / evaluate the MovingDigits world"),
    "eval": ("t2v_turbo.evaluation.cli", "evaluate models and step counts on a prompt file"),
    "export-vbench": ("t2v_turbo.evaluation.vbench", "write a VBench-ready video folder"),
    "demo": ("t2v_turbo.demo", "start the local web demo (needs the [demo] extra)"),
}


def _usage() -> str:
    lines = ["usage: t2v-turbo COMMAND [args]", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`t2v-turbo COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.cli(rest) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

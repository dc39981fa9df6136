"""`t2v-turbo COMMAND ...`: dispatch to the command registry (commands/); nothing else."""

from __future__ import annotations

import sys

from . import __version__
from .commands import COMMANDS
from .commands._common import run_command


def _usage() -> str:
    lines = ["usage: t2v-turbo COMMAND [args]", "", "commands:"]
    lines += [f"  {name:<14} {COMMANDS.help(name)}" for name in COMMANDS.names()]
    lines += ["", "`t2v-turbo COMMAND --help` shows a command's options; `t2v-turbo --version` the version."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"t2v-turbo {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; valid: {', '.join(COMMANDS.names())}", file=sys.stderr)
        return 2
    return run_command(COMMANDS.get(name), rest)


if __name__ == "__main__":
    sys.exit(main())

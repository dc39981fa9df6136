"""(moving here from t2v_turbo.evaluation.cli)"""


def main(argv: list[str]) -> int:
    from ..evaluation.cli import cli

    return cli(argv)

"""(moving here from t2v_turbo.demo)"""


def main(argv: list[str]) -> int:
    from ..demo import cli

    return cli(argv)

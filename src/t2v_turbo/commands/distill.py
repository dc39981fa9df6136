"""(moving here from t2v_turbo.train)"""


def main(argv: list[str]) -> int:
    from ..train import cli

    return cli(argv)

"""(moving here from t2v_turbo.pipeline)"""


def main(argv: list[str]) -> int:
    from ..pipeline import cli

    return cli(argv)

"""(moving here from t2v_turbo.data.cache)"""


def main(argv: list[str]) -> int:
    from ..data.cache import cli

    return cli(argv)

"""(moving here from t2v_turbo.evaluation.vbench)"""


def main(argv: list[str]) -> int:
    from ..evaluation.vbench import cli

    return cli(argv)

import json
from pathlib import Path

import pytest
import torch

# tiny models are dominated by per-op overhead: one intra-op thread is fastest, and stays fast when the
# machine is shared (2 threads spin-wait under load: 10-20x slower measured here)
torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# reference numbers and parameter layouts recorded from the official T2V-Turbo / VideoCrafter2 code
# (vendored: see fixtures/vc2_layouts/README.md for how they were made)
REFERENCE = FIXTURES / "vc2_layouts"


@pytest.fixture(scope="session")
def reference_numbers():
    return json.loads((REFERENCE / "reference_numbers.json").read_text())


@pytest.fixture(scope="session")
def tiny_teacher():
    from t2v_turbo.models.tiny import tiny_modelscope

    return tiny_modelscope(seed=0).freeze().eval()

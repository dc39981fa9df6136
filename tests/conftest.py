from pathlib import Path

import pytest
import torch

# tiny models are dominated by per-op overhead: one intra-op thread is fastest, and stays fast when the
# machine is shared (2 threads spin-wait under load: 10-20x slower measured here)
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference" / "vc2_layouts"


@pytest.fixture(scope="session")
def reference_numbers():
    import json

    f = REFERENCE / "reference_numbers.json"
    if not f.exists():
        pytest.skip(f"reference data not found at {f} (shared/ must sit beside the checkout)")
    return json.loads(f.read_text())


@pytest.fixture(scope="session")
def tiny_teacher():
    from t2v_turbo.models.tiny import tiny_modelscope

    return tiny_modelscope(seed=0).freeze().eval()

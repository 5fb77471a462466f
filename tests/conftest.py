import pytest
import torch

from crackseg.data.synthetic import generate


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A synthetic dataset of 64x64 px images: 6 train, 3 valid (crops of 32 px)."""
    return generate(tmp_path_factory.mktemp("data"), seed=3, image_size=64, counts={"train": 6, "valid": 3})


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory):
    """Models exported for onnxruntime go to a cache of this session, not the user's."""
    import os

    os.environ["CRACKSEG_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _float_gate_by_default(monkeypatch):
    """`--gate-precision auto` times the int8 gate against the float one and takes the faster: in tests it takes the
    float one, so that results do not depend on the CPU's timing; tests of the int8 gate ask for it."""
    from crackseg.inference import quantization

    monkeypatch.setattr(quantization, "_int8_gate_faster", lambda gated, device: False)
    monkeypatch.setattr(quantization, "_MEASURED", {})

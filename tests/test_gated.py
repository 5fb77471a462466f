import pytest
import torch
from torch import nn

from crackseg import UNetClassifier


class FixedLogits(nn.Module):
    """A stand-in head that returns chosen logits, to drive the gate's decisions exactly."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits).reshape(-1, 1)

    def forward(self, bottleneck):
        return self.logits


def gated_model(logits, threshold=0.5):
    torch.manual_seed(0)
    model = UNetClassifier(width=4, crop_size=32, threshold=threshold).eval()
    model.head = FixedLogits(logits)
    calls = []
    model.decoder.register_forward_hook(lambda module, args, output: calls.append(args[0].clone()))
    return model, calls


def test_decoder_runs_on_exactly_the_gated_subset():
    model, calls = gated_model([3.0, -3.0, 0.5, -0.1])
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        masks, probs = model(images)
        bottleneck, skips = model.encoder(images)
        expected = torch.sigmoid(model.decoder(bottleneck, skips))
    assert len(calls) == 2  # once in forward, once for `expected` above
    assert torch.equal(calls[0], bottleneck[[0, 2]])
    assert masks.shape == (4, 1, 32, 32) and probs.shape == (4, 1)
    assert torch.allclose(probs[:, 0], torch.sigmoid(torch.tensor([3.0, -3.0, 0.5, -0.1])))
    torch.testing.assert_close(masks[[0, 2]], expected[[0, 2]])
    assert torch.count_nonzero(masks[[1, 3]]) == 0


def test_all_negative_batch_runs_no_decoder():
    model, calls = gated_model([-2.0, -1.0, -0.5])
    with torch.no_grad():
        masks, probs = model(torch.rand(3, 3, 32, 32))
    assert calls == []
    assert masks.shape == (3, 1, 32, 32) and torch.count_nonzero(masks) == 0
    assert (probs < 0.5).all()


def test_threshold_is_the_users():
    model, calls = gated_model([0.0, 1.0], threshold=0.8)  # probabilities 0.5 and 0.73: both below 0.8
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32))
    assert calls == []
    model.threshold = 0.6
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32))
    assert calls[0].shape[0] == 1


def test_rejects_images_of_another_size():
    model = UNetClassifier(width=4, crop_size=32).eval()
    with pytest.raises(ValueError, match="takes 32x32 crops"):
        model(torch.rand(1, 3, 64, 64))

import pytest
import torch

from crackseg import UNet, UNetClassifier, VGGEncoderClassifier
from crackseg.models import ClassifierHead, VGGEncoder
from crackseg.models.unet import drop_skips


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_original():
    unet = UNet(width=32)
    assert count(unet) == 7_763_041
    assert count(unet.encoder) == 4_714_208
    assert count(unet.decoder) == 3_048_833
    assert count(ClassifierHead(512, 224)) == 53_487_617
    assert count(UNetClassifier(width=32, crop_size=224)) == 61_250_658


def test_unet_shapes_and_encoder_outputs():
    unet = UNet(width=4).eval()
    x = torch.rand(2, 3, 64, 48)
    assert unet(x).shape == (2, 1, 64, 48)
    bottleneck, skips = unet.encoder(x)
    assert bottleneck.shape == (2, 64, 4, 3)
    assert [s.shape[1:] for s in skips] == [(4, 64, 48), (8, 32, 24), (16, 16, 12), (32, 8, 6)]


def test_unet_rejects_sides_that_break_the_skips():
    with pytest.raises(ValueError, match="multiples of 16"):
        UNet(width=4)(torch.rand(1, 3, 40, 64))


def test_head_input_size_follows_width_and_crop():
    head = ClassifierHead(in_channels=64, crop_size=64)
    assert head.layers[2].in_features == 64 * 2 * 2
    assert head.eval()(torch.rand(3, 64, 4, 4)).shape == (3, 1)
    with pytest.raises(ValueError, match="multiple of 32"):
        ClassifierHead(in_channels=64, crop_size=48)


def test_forward_and_backward_on_small_input():
    model = VGGEncoderClassifier(VGGEncoder(4), crop_size=64)
    logits = model(torch.rand(2, 3, 64, 64))
    logits.sum().backward()
    assert logits.shape == (2, 1)
    assert all(p.grad is not None for p in model.head.parameters())
    assert all(p.grad is None for p in model.encoder.parameters())


def test_frozen_encoder_keeps_weights_and_batchnorm_statistics():
    torch.manual_seed(0)
    model = VGGEncoderClassifier(VGGEncoder(4), crop_size=32)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    assert not model.encoder.training and model.head.training
    for _ in range(3):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(torch.rand(4, 3, 32, 32) * 5), torch.tensor([[0.0], [1.0], [0.0], [1.0]]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.encoder.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items())


def test_skip_dropout_zeroes_whole_skip_maps_and_only_while_training():
    torch.manual_seed(0)
    skips = [torch.ones(64, 2, 4, 4)]
    (dropped,) = drop_skips(skips, p=0.5)
    per_sample = dropped.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # kept maps rescaled by 1 / (1 - p)
    assert torch.equal(per_sample.amin(1), per_sample.amax(1))  # a map is dropped whole
    assert 16 < int((per_sample[:, 0] == 0).sum()) < 48

    plain, dropping = UNet(width=4), UNet(width=4, skip_dropout=0.5)
    dropping.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(plain.eval()(x), dropping.eval()(x))
    torch.manual_seed(1)
    assert not torch.equal(plain.train()(x), dropping.train()(x))

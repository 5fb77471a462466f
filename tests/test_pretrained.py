"""The ready-made model shipped in the package: checksum, fallback order, damaged files, and it finds cracks."""
import pytest
import torch

from crackseg import UNetClassifier
from crackseg.analysis.metrics import binary_counts, segmentation_scores
from crackseg.cli import build_parser, main
from crackseg.cli.common import load_model
from crackseg.data.synthetic import generate
from crackseg.errors import CheckpointError
from crackseg.files import pretrained
from crackseg.files.checkpoints import save_checkpoint
from crackseg.files.images import load_image, load_mask
from crackseg.inference.predictor import Predictor
from crackseg.models import UNet, VGGEncoderClassifier


def tiny_checkpoints(folder):
    torch.manual_seed(0)
    unet = UNet(4)
    config = {"width": 4, "crop": 32, "skip_dropout": 0.0}
    save_checkpoint(folder / "seg.pth", "segmentation", unet.state_dict(), unet.settings(), config, epoch=1)
    classifier = VGGEncoderClassifier(unet.encoder, 32)
    save_checkpoint(folder / "cls.pth", "classification", classifier.state_dict(), classifier.settings(), config,
                    epoch=1)
    return ["--segmentation-checkpoint", str(folder / "seg.pth"), "--classification-checkpoint",
            str(folder / "cls.pth")]


@pytest.fixture
def tiny_shipped(tmp_path, monkeypatch):
    """A tiny packed model standing in for the shipped one."""
    flags = tiny_checkpoints(tmp_path)
    out = tmp_path / "weights.pth"
    assert main(["pack", *flags, "--out", str(out), "--mask-threshold", "0.3"]) == 0
    monkeypatch.setattr(pretrained, "WEIGHTS", out)
    monkeypatch.setattr(pretrained, "SHA256", pretrained.sha256(out))
    return out


def test_the_shipped_file_matches_its_recorded_checksum_and_size_limit():
    assert pretrained.WEIGHTS.is_file(), "the package ships its weights"
    assert pretrained.sha256(pretrained.WEIGHTS) == pretrained.SHA256
    assert pretrained.WEIGHTS.stat().st_size <= 40e6
    payload = pretrained.load_pretrained()
    assert payload["model"]["crop_size"] % 32 == 0 and 0 < payload["model"]["mask_threshold"] < 1


def test_pack_reads_each_checkpoint_once(tmp_path, monkeypatch):
    from crackseg.cli import pack
    from crackseg.models import gated

    reads = []
    real = pack.load_checkpoint
    counted = lambda path, *a, **k: reads.append(path) or real(path, *a, **k)  # noqa: E731
    monkeypatch.setattr(pack, "load_checkpoint", counted)
    monkeypatch.setattr(gated, "load_checkpoint", counted)
    flags = tiny_checkpoints(tmp_path)
    assert main(["pack", *flags, "--out", str(tmp_path / "weights.pth")]) == 0
    assert sorted(reads) == sorted([flags[1], flags[3]])
    assert pretrained.load_pretrained(tmp_path / "weights.pth", pretrained.sha256(tmp_path / "weights.pth"))[
        "training"]["segmentation"]["epoch"] == 1


def test_pack_writes_a_new_file_by_default_and_never_the_shipped_one(tmp_path, monkeypatch, capsys):
    flags = tiny_checkpoints(tmp_path)
    shipped = tmp_path / "package" / "weights" / "crackseg-v2.pth"  # stands in for the shipped file
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"the shipped weights")
    monkeypatch.setattr(pretrained, "WEIGHTS", shipped)
    monkeypatch.chdir(tmp_path)
    assert main(["pack", *flags]) == 0
    assert shipped.read_bytes() == b"the shipped weights"  # was overwritten: the default --out
    packed = tmp_path / "crackseg-packed.pth"
    assert pretrained.load_pretrained(packed, pretrained.sha256(packed))["model"]["width"] == 4
    assert main(["pack", *flags, "--out", str(shipped.parent / ".." / "weights" / shipped.name)]) == 2
    assert shipped.read_bytes() == b"the shipped weights"
    assert "the shipped weights file" in capsys.readouterr().err


def test_pack_round_trip_in_float16(tiny_shipped, tmp_path):
    model = UNetClassifier.pretrained()
    original = UNetClassifier.from_checkpoints(tmp_path / "seg.pth", tmp_path / "cls.pth")
    assert (model.width, model.crop_size, model.mask_threshold) == (4, 32, 0.3)
    for key, value in original.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value.half().to(value.dtype), msg=key)


def test_pack_keeps_values_beyond_float16_range(tmp_path):
    state = {"bn.running_var": torch.tensor([267348.5, 12579.5]), "conv.weight": torch.tensor([0.25, -1.5]),
             "bn.num_batches_tracked": torch.tensor(7), "empty": torch.zeros(0)}
    digest = pretrained.pack(state, {}, {}, tmp_path / "weights.pth")
    loaded = pretrained.load_pretrained(tmp_path / "weights.pth", digest)["state"]
    torch.testing.assert_close(loaded["bn.running_var"], state["bn.running_var"])  # float16 would make it inf
    assert torch.load(tmp_path / "weights.pth", weights_only=True)["state"]["conv.weight"].dtype == torch.float16
    assert loaded["bn.num_batches_tracked"].item() == 7 and loaded["empty"].shape == (0,)


def test_explicit_checkpoints_win_over_the_shipped_model(tiny_shipped, tmp_path):
    parse = lambda *extra: build_parser().parse_args(["predict", "x", "--out", "o", *extra])  # noqa: E731
    shipped = load_model(parse())
    assert shipped.width == 4 and shipped.mask_threshold == 0.3  # the (stand-in) shipped file
    (tmp_path / "own").mkdir()
    flags = tiny_checkpoints(tmp_path / "own")
    own = load_model(parse(*flags))
    assert own.mask_threshold == 0.5  # read from the checkpoints given, not the shipped file
    assert not torch.equal(own.head.layers[2].weight, shipped.head.layers[2].weight)
    with pytest.raises(CheckpointError, match="go together"):
        load_model(parse(flags[0], flags[1]))


def test_a_gate_threshold_of_0_is_kept_with_checkpoints_and_export_records_it(tmp_path, monkeypatch):
    from crackseg.inference import export

    flags = tiny_checkpoints(tmp_path)
    parse = lambda *extra: build_parser().parse_args(["predict", "x", "--out", "o", *extra])  # noqa: E731
    assert load_model(parse(*flags, "--gate-threshold", "0")).threshold == 0.0  # was 0.5: `0 or 0.5`
    assert load_model(parse(*flags)).threshold == 0.5
    exported = []
    monkeypatch.setattr(export, "export_onnx", lambda model, out: exported.append(model.threshold) or {
        "crop": model.crop_size, "gate_threshold": model.threshold, "mask_threshold": model.mask_threshold})
    assert main(["export", *flags, "--gate-threshold", "0", "--out", str(tmp_path / "onnx")]) == 0
    assert exported == [0.0]


def test_a_predictor_binarises_at_the_models_stored_mask_threshold(tiny_shipped):
    model = UNetClassifier.pretrained()  # the stand-in stores mask threshold 0.3
    assert Predictor(model, fast=False).mask_threshold == 0.3  # was 0.5
    assert Predictor(model, fast=False, mask_threshold=0.6).mask_threshold == 0.6


def test_a_damaged_weights_file_is_a_one_line_error_naming_it(tiny_shipped, tmp_path, capsys):
    data = bytearray(tiny_shipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tiny_shipped.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 .* does not match"):
        UNetClassifier.pretrained()
    image = tmp_path / "photo.png"
    image.write_bytes(b"")
    assert main(["predict", str(image), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tiny_shipped) in err and "reinstall" in err
    tiny_shipped.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        UNetClassifier.pretrained()


def test_the_shipped_model_finds_synthetic_cracks(tmp_path):
    model = UNetClassifier.pretrained()
    root = generate(tmp_path / "data", seed=11, image_size=2 * model.crop_size, counts={"train": 0, "valid": 12})
    predictor = Predictor(model, device="cpu", precision="fp32", mask_threshold=model.mask_threshold)
    pairs = [(load_image(path), load_mask(root / "valid" / "masks" / f"{path.stem}.png").bool()[0])
             for path in sorted((root / "valid" / "images").iterdir())]
    cracked = [(image, mask) for image, mask in pairs if mask.sum() > 0]
    assert len(cracked) >= 4
    counts = torch.zeros(4, dtype=torch.long)
    found = 0
    for (_, mask), result in zip(cracked, predictor.tiled(enumerate(image for image, _ in cracked))):
        counts += binary_counts(result.probs >= predictor.mask_threshold, mask)
        found += result.cracked
    assert found >= 0.75 * len(cracked)  # a faint hairline may pass the gate unseen
    assert segmentation_scores(counts)["dice"] > 0.5

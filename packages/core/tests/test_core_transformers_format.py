"""transformers UperNet + ConvNeXt repos load as segcore models (references made with transformers itself)."""

from __future__ import annotations

import json

import pytest
import segcore
import torch
import torch.nn.functional as F  # noqa: N812
from segcore.testing import perturb_norms

transformers = pytest.importorskip("transformers")

SIZES = [(93, 117), (130, 71), (64, 64)]  # the first two are not multiples of 32
CLASSES = ["wall", "floor", "tree", "car", "person"]
PREPROCESSOR = {
    "do_normalize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "image_mean": [0.5, 0.4, 0.3],
    "image_std": [0.2, 0.25, 0.3],
    "image_processor_type": "SegformerImageProcessor",
}


@pytest.fixture(scope="module")
def upernet_repo(tmp_path_factory):
    torch.manual_seed(0)
    backbone = transformers.ConvNextConfig(
        hidden_sizes=[40, 80, 160, 320], depths=[2, 2, 6, 2], out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    config = transformers.UperNetConfig(
        backbone_config=backbone,
        hidden_size=32,
        auxiliary_channels=16,
        num_labels=len(CLASSES),
        id2label=dict(enumerate(CLASSES)),
        label2id={n: i for i, n in enumerate(CLASSES)},
    )
    reference = perturb_norms(transformers.UperNetForSemanticSegmentation(config)).eval()
    folder = tmp_path_factory.mktemp("upernet-hf")
    reference.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    (folder / "README.md").write_text("---\nlicense: mit\nlibrary_name: transformers\n---\n# UperNet\n")
    return reference, folder


def _reference_logits(reference, x):
    with torch.no_grad():
        logits = reference(pixel_values=x).logits
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_upernet_convnext_from_the_hub_matches_transformers(upernet_repo, caplog, local_hub):
    reference, folder = upernet_repo
    local_hub.add_repo("openmmlab-test/upernet-convnext", folder)
    model = segcore.SegModel.from_pretrained("openmmlab-test/upernet-convnext")
    cfg = model.config
    assert (cfg.encoder, cfg.decoder, cfg.num_classes, cfg.class_names) == ("timm:convnext_atto", "upernet", 5, CLASSES)
    assert cfg.mean == pytest.approx((127.5, 102.0, 76.5)) and cfg.std == pytest.approx((51.0, 63.75, 76.5))
    assert cfg.extra["converted_from"]["dropped"] == "8 auxiliary_head.* tensors"
    assert "auxiliary_head" in caplog.text and cfg.extra["license"] == "mit"
    assert cfg.extra["base_model"] == cfg.extra["name"] == "openmmlab-test/upernet-convnext"
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        ref = _reference_logits(reference, x)
        with torch.no_grad():
            got = model(x)
        diff = float((got - ref).abs().max())
        print(f"upernet-convnext {h}x{w}: max abs diff {diff:.2e} (max |logit| {float(ref.abs().max()):.2f})")
        assert got.shape == ref.shape and diff < 1e-4


def test_uint8_images_use_the_preprocessor_normalisation(upernet_repo):
    reference, folder = upernet_repo
    model = segcore.SegModel.from_pretrained(folder)
    images = torch.randint(0, 256, (1, 3, 70, 90), dtype=torch.uint8)
    mean = torch.tensor(PREPROCESSOR["image_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESSOR["image_std"]).view(1, 3, 1, 1)
    pixel_values = (images.float() / 255 - mean) / std
    with torch.no_grad():
        assert float((model(images) - _reference_logits(reference, pixel_values)).abs().max()) < 1e-4


def test_converted_model_is_an_ordinary_segcore_model(upernet_repo, tmp_path):
    _, folder = upernet_repo
    model = segcore.SegModel.from_pretrained(folder)
    # Saves in segcore format and round-trips exactly.
    model.save_pretrained(tmp_path / "segcore")
    again = segcore.SegModel.from_pretrained(tmp_path / "segcore")
    x = torch.randn(1, 3, 75, 99)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert json.loads((tmp_path / "segcore" / "config.json").read_text())["encoder"] == "timm:convnext_atto"
    # Fine-tunes.
    model.train()
    labels = torch.randint(0, 5, (2, 64, 80))
    loss = model.compute_loss(torch.randn(2, 3, 64, 80), labels)["loss"]
    loss.backward()
    assert model.decoder.conv_seg.weight.grad is not None and model.encoder.out_norms[0].weight.grad is not None
    # Its encoder works with any decoder.
    other = segcore.build_model(
        model.config.encoder, "linear", 3, encoder_options=model.config.encoder_options, decoder_options={"channels": 8}
    )
    other.encoder.load_state_dict(model.encoder.state_dict())
    assert other(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    # The folder transformers wrote is not segcore's: saving over it is refused.
    with pytest.raises(segcore.CheckpointError, match="not a segcore config"):
        model.save_pretrained(folder)


def test_unsupported_transformers_models_are_named(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "beit", "architectures": ["BeitForSemanticSegmentation"]})
    )
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(
        segcore.CheckpointError, match="'beit' .*has no segcore converter; supported: segformer, upernet"
    ):
        segcore.SegModel.from_pretrained(tmp_path)


def test_upernet_swin_is_refused_with_the_reason(tmp_path):
    # timm's Swin rolls before it pads to the window, transformers pads then rolls: no exact mapping (issue #17).
    backbone = transformers.SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1])
    config = transformers.UperNetConfig(backbone_config=backbone, hidden_size=16, num_labels=2)
    config.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")  # refused before the weights are read
    with pytest.raises(segcore.CheckpointError, match="upernet with a swin backbone is not supported") as err:
        segcore.SegModel.from_pretrained(tmp_path)
    assert "pads each stage's map to a multiple of window_size and then rolls it" in str(err.value)
    assert "timm rolls the unpadded map and then pads" in str(err.value)

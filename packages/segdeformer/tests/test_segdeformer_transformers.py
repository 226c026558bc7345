"""transformers SegFormer repos and the Hub's MiT ImageNet encoders load as segcore models (no transformers needed
to load; the references are made with transformers itself)."""

from __future__ import annotations

import json

import pytest
import segcore
import torch
import torch.nn.functional as F
from segcore.testing import perturb_norms

transformers = pytest.importorskip("transformers")

SIZES = [(93, 117), (130, 71), (64, 64)]  # the first two are not multiples of 32
CLASSES = ["sky", "road", "car", "tree"]


@pytest.fixture(scope="module")
def segformer_repo(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        hidden_sizes=[32, 64, 160, 256],
        depths=[2, 2, 2, 2],
        decoder_hidden_size=64,
        num_labels=len(CLASSES),
        id2label=dict(enumerate(CLASSES)),
        label2id={n: i for i, n in enumerate(CLASSES)},
    )
    reference = perturb_norms(transformers.SegformerForSemanticSegmentation(config)).eval()
    folder = tmp_path_factory.mktemp("segformer-hf")
    reference.save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: other\nlicense_name: nvidia-source-code-license\n---\n# x\n")
    return reference, folder


def test_core_mlp_head_is_not_segformers_own():
    # Why SegFormer gets its own head: core's mlp (mmseg SegformerHead) has conv+BN+ReLU projections.
    mlp = segcore.build_model("mit-b0", "mlp", 4, decoder_options={"channels": 64})
    own = segcore.build_model("mit-b0", "segformer", 4, decoder_options={"channels": 64})
    assert {k for k in mlp.decoder.state_dict() if "convs.0" in k} != set()
    assert sorted(k for k in own.decoder.state_dict() if k.startswith("linear_c.0")) == [
        "linear_c.0.bias",
        "linear_c.0.weight",
    ]


def test_segformer_from_the_hub_matches_transformers(segformer_repo, local_hub):
    reference, folder = segformer_repo
    local_hub.add_repo("nvidia-test/segformer-b0-tiny", folder)
    model = segcore.SegModel.from_pretrained("nvidia-test/segformer-b0-tiny")
    cfg = model.config
    assert (cfg.encoder, cfg.decoder, cfg.class_names) == ("mit-b0", "segformer", CLASSES)
    assert cfg.extra["license_name"] == "nvidia-source-code-license"
    assert cfg.extra["converted_from"]["normalization"].startswith("ImageNet")  # no preprocessor_config.json
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            ref = F.interpolate(reference(pixel_values=x).logits, size=(h, w), mode="bilinear", align_corners=False)
            got = model(x)
        diff = float((got - ref).abs().max())
        print(f"segformer {h}x{w}: max abs diff {diff:.2e} (max |logit| {float(ref.abs().max()):.2f})")
        assert got.shape == ref.shape and diff < 1e-4


def test_segformer_fine_tunes_and_its_encoder_takes_any_decoder(segformer_repo, tmp_path):
    _, folder = segformer_repo
    model = segcore.SegModel.from_pretrained(folder).train()
    loss = model.compute_loss(torch.randn(2, 3, 64, 96), torch.randint(0, 4, (2, 64, 96)))["loss"]
    loss.backward()
    assert model.decoder.linear_c[3].weight.grad is not None
    other = segcore.build_model("mit-b0", "upernet", 3, model.config.encoder_options, {"channels": 16}).eval()
    other.encoder.load_state_dict(model.encoder.state_dict())
    assert other(torch.randn(1, 3, 70, 70)).shape == (1, 3, 70, 70)
    model.save_pretrained(tmp_path / "out")
    assert segcore.SegModel.from_pretrained(tmp_path / "out").config.decoder == "segformer"


def test_segformer_repo_saves_as_a_segcore_folder(segformer_repo, tmp_path):
    """What `segcore convert --format transformers` does (tests/test_cli_components.py runs the command)."""
    reference, folder = segformer_repo
    segcore.SegModel.from_pretrained(folder).save_pretrained(tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["decoder"] == "segformer" and config["class_names"] == CLASSES
    model = segcore.SegModel.from_pretrained(tmp_path / "out")
    x = torch.randn(1, 3, 77, 101)
    with torch.no_grad():
        ref = F.interpolate(reference(pixel_values=x).logits, size=(77, 101), mode="bilinear", align_corners=False)
        assert float((model(x) - ref).abs().max()) < 1e-4


def test_hub_mit_imagenet_encoder_is_usable_as_pretrained_weights(tmp_path, local_hub):
    torch.manual_seed(1)
    config = transformers.SegformerConfig(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], num_labels=10)
    reference = perturb_norms(transformers.SegformerForImageClassification(config)).eval()
    reference.save_pretrained(tmp_path / "mit")
    x = torch.randn(1, 3, 96, 80)
    local_hub.add_repo("nvidia-test/mit-b0", tmp_path / "mit")
    # transformers' MiT uses LayerNorm eps 1e-5 (mmseg's, the mit-b0 default: 1e-6).
    model = segcore.build_model(
        "mit-b0", "segformer", 4, {"norm_eps": 1e-5}, {"channels": 32}, pretrained_encoder="nvidia-test/mit-b0"
    ).eval()
    with torch.no_grad():
        ours = model.encoder(x)
        theirs = reference.segformer(pixel_values=x, output_hidden_states=True).hidden_states
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and float((a - b).abs().max()) < 1e-4

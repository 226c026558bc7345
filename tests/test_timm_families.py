"""timm families with their own input rules run at an odd size (97x131) with every family of decoder (issue #28).

* LeViT (and EfficientFormer): attention biases built for one resolution; inputs are padded to it and the maps
  cropped back, a larger input is refused in words.
* MaxViT: window and grid attention must tile every stage; inputs are padded to a multiple of the nominal size.
* RegNetY-002 + ATM: ATM's width (184) is not a multiple of 32; the head count is the largest divisor below
  184 / 32, recorded in the model's config.
"""

from __future__ import annotations

import pytest
import segcore
import torch
from segcore.errors import OptionsError, SegcoreError

DECODERS = ("upernet", "segdeformer", "atm", "ham")
SIZE = (97, 131)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    ("encoder", "divisor", "fixed"),
    [("levit_128s", 1, (224, 224)), ("maxvit_rmlp_pico_rw_256", 256, None), ("regnety_002", 1, None)],
)
def test_family_runs_at_an_odd_size_with_every_decoder(encoder, divisor, fixed, decoder):
    torch.manual_seed(0)
    options = {"channels": 64} if decoder == "upernet" else {}
    model = segcore.build_model(f"timm:{encoder}", decoder, 5, decoder_options=options).eval()
    assert model.encoder.size_divisor == divisor
    assert model.encoder.fixed_size == fixed
    with torch.no_grad():
        logits = model(torch.randn(2, 3, *SIZE))
    assert logits.shape == (2, 5, *SIZE)
    assert torch.isfinite(logits).all()


def test_fixed_size_maps_equal_the_model_run_on_the_padded_input():
    torch.manual_seed(0)
    enc = segcore.build_encoder("timm:levit_128s").eval()
    x = torch.randn(1, 3, *SIZE)
    padded = torch.nn.functional.pad(x, (0, 224 - SIZE[1], 0, 224 - SIZE[0]))
    with torch.no_grad():
        got = enc(x)
        full = [f for f in enc.model(padded)]
    for g, f, info in zip(got, full, enc.feature_info, strict=True):
        h, w = -(-SIZE[0] // info.stride), -(-SIZE[1] // info.stride)
        assert g.shape[-2:] == (h, w)
        assert torch.equal(g, f[..., :h, :w])


def test_fixed_size_refuses_a_larger_input_naming_the_option():
    enc = segcore.build_encoder("timm:levit_128s").eval()
    with pytest.raises(SegcoreError, match=r"224x224 at most.*img_size=N.*--mode slide --crop-size 224,224"):
        enc(torch.zeros(1, 3, 240, 200))


def test_fixed_size_follows_img_size():
    enc = segcore.build_encoder("timm:levit_128s", img_size=256).eval()
    assert enc.fixed_size == (256, 256)
    with torch.no_grad():
        maps = enc(torch.zeros(1, 3, 240, 200))
    assert [tuple(m.shape[-2:]) for m in maps] == [(15, 13), (8, 7), (4, 4)]


def test_levit_trains_in_eval_mode_twice():
    """timm's LeViT caches attention biases in eval mode; two backward passes must not share the cached graph."""
    model = segcore.build_model("timm:levit_128s", "linear", 3).eval()
    for _ in range(2):
        model.compute_loss(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), torch.zeros(1, 64, 64, dtype=torch.long))[
            "loss"
        ].backward()


def test_atm_head_count_divides_the_width_and_is_recorded():
    model = segcore.build_model("timm:regnety_002", "atm", 5)
    # 368 channels at stride 32 -> D = 184; 184 / 32 = 5 does not divide 184, 4 does.
    assert model.config.decoder_options == {"embed_dims": 184, "num_heads": 4}
    attn = model.decoder.stages[0][0].self_attn
    assert (attn.embed_dim, attn.num_heads) == (184, 4)
    again = segcore.SegModel(model.config)  # the recorded config rebuilds the same model
    assert again.config == model.config


def test_atm_official_widths_keep_their_head_counts():
    from segcore.plugins.specs import FeatureInfo
    from segcore_segvit.atm import atm

    assert atm([FeatureInfo(768, 16)] * 3, 150).derived_options == {"embed_dims": 384, "num_heads": 12}
    assert atm([FeatureInfo(1024, 16)] * 3, 150).derived_options == {"embed_dims": 512, "num_heads": 16}


def test_atm_head_count_that_does_not_divide_is_refused_in_words():
    with pytest.raises(OptionsError, match=r"num_heads 5 does not divide .*embed_dims=184; pick one of \[1, 2, 4, 8"):
        segcore.build_model("timm:regnety_002", "atm", 5, decoder_options={"num_heads": 5})

"""``segcore predict``: a palette label PNG and an overlay PNG per image, at the image's own size."""

from __future__ import annotations

import argparse

from segcore_cli._common import add_precision_option


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` parser."""
    p = sub.add_parser(
        "predict",
        help="segment images: label PNGs and overlays",
        description="Segment images and write <name>_label.png (palette) and <name>_overlay.png.",
    )
    p.add_argument("--model", required=True, help="registered name, Hub repo id or folder (a training run too)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the label colours")
    p.add_argument(
        "--max-side",
        type=int,
        default=1024,
        help="images larger than this run in sliding windows of this size (default 1024)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_precision_option(p)
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Predict every image."""
    import json
    from pathlib import Path

    import numpy as np
    import segcore
    import torch
    from PIL import Image
    from segcore.inference import EvalProtocol, precision, predict_labels

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = segcore.SegModel.from_pretrained(args.model).to(device).eval()
    k = model.config.num_classes
    palette = np.array(model.config.palette or [], dtype=np.uint8).reshape(-1, 3)
    if len(palette) < k:  # no palette saved: a fixed pseudo-random one
        rng = np.random.default_rng(0)
        palette = np.concatenate([palette, rng.integers(0, 256, (k - len(palette), 3), dtype=np.uint8)])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    base = EvalProtocol.from_dict(model.config.eval)
    for path in args.images:
        rgb = np.array(Image.open(path).convert("RGB"))
        image = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)
        protocol = base
        if max(rgb.shape[:2]) > args.max_side and base.mode == "whole" and base.resize is None:
            side = args.max_side
            protocol = EvalProtocol(
                mode="slide",
                crop_size=(side, side),
                stride=(side * 2 // 3, side * 2 // 3),
                scales=base.scales,
                flip=base.flip,
            )
        with precision(device, args.precision):
            labels = predict_labels(model, image, protocol, k)[0].cpu().numpy().astype(np.uint8)
        stem = Path(path).stem
        label_img = Image.fromarray(labels, mode="P")
        label_img.putpalette(palette[:256].reshape(-1).tolist())
        label_file = out / f"{stem}_label.png"
        label_img.save(label_file)
        overlay = (rgb * (1 - args.alpha) + palette[labels] * args.alpha).round().astype(np.uint8)
        overlay_file = out / f"{stem}_overlay.png"
        Image.fromarray(overlay).save(overlay_file)
        written.append({"image": str(path), "label": str(label_file), "overlay": str(overlay_file)})
    if args.json:
        print(json.dumps(written))
    else:
        for row in written:
            print(f"{row['image']} -> {row['label']}, {row['overlay']}")
    return 0

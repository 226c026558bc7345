"""Model cards (``README.md``) built with ``huggingface_hub.ModelCard`` / ``ModelCardData`` / ``EvalResult``.

A card's metadata carries ``library_name: segcore``, ``pipeline_tag: image-segmentation``, the licence of the
weights' source, the datasets, the ``base_model`` of a fine-tune or conversion and a ``model-index`` with the
measured mIoU (single scale, and multi-scale + flip when measured) and the eval protocol. Everything comes from
the model's :class:`~segcore.SegModelConfig`: the measured scores live in ``config.extra["eval_results"]`` so that
a folder that is loaded, changed and saved again keeps them.

A card segcore wrote ends with a marker holding the SHA-256 of the text above it. A ``README.md`` without a
valid marker (one the user wrote, or a generated card the user edited) is never replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segcore.config.settings import EvalProtocol

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from segcore.models.model import SegModel, SegModelConfig

__all__ = [
    "CARD_NAME",
    "eval_result",
    "with_eval_results",
    "model_card",
    "is_segcore_card",
    "scores_from_metrics",
]

CARD_NAME = "README.md"
_MARKER = re.compile(r"\n<!-- segcore model card sha256:([0-9a-f]{64}) -->\n?$")
_METRIC_KEYS = ("mIoU", "mAcc", "aAcc")


def _marked(text: str) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{text}\n<!-- segcore model card sha256:{digest} -->\n"


def is_segcore_card(text: str) -> bool:
    """True when ``text`` is a card segcore generated and nobody edited since (its marker's hash matches)."""
    m = _MARKER.search(text)
    return bool(m) and hashlib.sha256(text[: m.start()].encode()).hexdigest() == m[1]


def eval_result(
    scores: Mapping[str, Any],
    protocol: EvalProtocol | Mapping[str, Any] | None,
    dataset: str,
    split: str = "val",
    source: str = "segcore eval",
) -> dict[str, Any]:
    """One measured evaluation as stored in ``config.extra["eval_results"]``.

    Args:
        scores: at least ``mIoU`` (percent); ``mAcc`` and ``aAcc`` are kept when present.
        protocol: the protocol that produced them (decides single scale vs multi-scale + flip).
        dataset: the dataset name (``ade20k``, ``hf:org/name``).
        split: the split evaluated.
        source: who measured it (``segcore eval``, ``segcore train``).
    """
    proto = EvalProtocol.from_dict(protocol) if protocol is not None else EvalProtocol()
    multi = tuple(proto.scales) != (1.0,) or proto.flip
    return {
        "dataset": dataset,
        "split": split,
        "multi_scale": multi,
        "protocol": proto.describe(),
        **{k: round(float(scores[k]), 2) for k in _METRIC_KEYS if k in scores and scores[k] == scores[k]},
        "source": source,
    }


def with_eval_results(config: SegModelConfig, *results: Mapping[str, Any]) -> SegModelConfig:
    """A copy of ``config`` whose ``extra["eval_results"]`` holds ``results``; ``config`` itself is not changed.

    Earlier entries for the same dataset, split and kind (single scale or multi-scale) are replaced.
    """
    kept = [
        r
        for r in config.extra.get("eval_results", [])
        if not any(
            (r["dataset"], r["split"], r["multi_scale"]) == (n["dataset"], n["split"], n["multi_scale"])
            for n in results
        )
    ]
    extra = {**config.extra, "eval_results": [*kept, *(dict(r) for r in results)]}
    return dataclasses.replace(config, extra=extra)


def _license(extra: Mapping[str, Any]) -> dict[str, str]:
    if not extra.get("license"):
        return {}
    out = {"license": str(extra["license"])}
    if extra.get("license_name"):
        out["license_name"] = str(extra["license_name"])
    if extra.get("license_link"):
        out["license_link"] = str(extra["license_link"])
    return out


def _dataset_id(name: str) -> str:
    return name[3:] if name.startswith("hf:") else name


def _card_data(config: SegModelConfig, name: str) -> Any:
    from huggingface_hub import EvalResult, ModelCardData

    extra = config.extra or {}
    results = []
    for r in extra.get("eval_results", []):
        if "mIoU" not in r:
            continue
        kind = "multi-scale + flip" if r.get("multi_scale") else "single scale"
        results.append(
            EvalResult(
                task_type="image-segmentation",
                task_name="Semantic segmentation",
                dataset_type=_dataset_id(r["dataset"]),
                dataset_name=r["dataset"],
                dataset_split=r.get("split"),
                metric_type="mean_iou",
                metric_name=f"mIoU ({kind})",
                metric_value=r["mIoU"],
                metric_config=r.get("protocol"),
            )
        )
    named = [extra.get("dataset"), *(r.get("dataset") for r in extra.get("eval_results", []))]
    datasets = sorted({_dataset_id(str(d)) for d in named if d and d != "unknown"})
    base = extra.get("base_model") or extra.get("init_from")
    return ModelCardData(
        library_name="segcore",
        pipeline_tag="image-segmentation",
        tags=["segcore", "semantic-segmentation", config.encoder.replace(":", "-"), config.decoder],
        datasets=datasets or None,
        base_model=str(base) if base and "/" in str(base) else None,
        metrics=["mean_iou"] if results else None,
        model_name=name,
        eval_results=results or None,
        **_license(extra),
    )


def _body(config: SegModelConfig, name: str, num_params: int | None, repo_id: str | None) -> list[str]:
    extra = config.extra or {}
    size = f", {num_params / 1e6:.3f} M parameters" if num_params else ""
    lines = [
        f"# {name}",
        "",
        f"A [segcore](https://github.com/segcore/segcore) semantic segmentation model: encoder `{config.encoder}`, "
        f"decoder `{config.decoder}`, {config.num_classes} classes{size}.",
        "",
        "## Licence",
        "",
    ]
    lic = _license(extra)
    if lic:
        what = lic.get("license_name", lic["license"])
        lines.append(f"The weights are under **{what}**. {extra.get('license_note', '')}".rstrip())
    else:
        lines.append("The weights' source states no licence; check it before any use.")
    lines += ["", "## How it was made", ""]
    for key in ("source", "converter", "converted_from", "base_model", "init_from", "dataset", "recipe", "metric"):
        if extra.get(key):
            value = extra[key]
            lines.append(f"- **{key.replace('_', ' ')}**: {json.dumps(value) if isinstance(value, dict) else value}")
    if extra.get("eval_protocol"):
        lines.append(f"- **expected eval protocol**: {extra['eval_protocol']}")
    if lines[-1] == "":
        lines.append("- built with `segcore` (see `config.json`)")
    results = extra.get("eval_results", [])
    if results:
        lines += ["", "## Evaluation", "", "| dataset | split | kind | mIoU | mAcc | aAcc | protocol | measured by |"]
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in results:
            kind = "multi-scale + flip" if r.get("multi_scale") else "single scale"
            cells = [r["dataset"], r.get("split", ""), kind, *(str(r.get(k, "")) for k in _METRIC_KEYS)]
            lines.append("| " + " | ".join([*cells, r.get("protocol", ""), r.get("source", "")]) + " |")
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "import segcore",
        f'model = segcore.SegModel.from_pretrained("{repo_id or "<this repo or folder>"}")',
        "labels = model.predict(images)  # images: uint8 [B, 3, H, W]",
        "```",
    ]
    if config.class_names:
        lines += ["", "## Classes", "", ", ".join(f"{i}: {n}" for i, n in enumerate(config.class_names))]
    return lines


def model_card(
    model_or_config: SegModel | SegModelConfig, repo_id: str | None = None, num_params: int | None = None
) -> ModelCard:
    """The ``huggingface_hub.ModelCard`` of a model (or of its config), with segcore's marker.

    Args:
        model_or_config: the model, or its config (then give ``num_params`` to state the size).
        repo_id: the Hub repo the card is for (shown in the usage snippet).
        num_params: parameter count, when only a config is given.

    Example:
        >>> card = model_card(model, repo_id="me/segformer-b0")  # doctest: +SKIP
        >>> card.data.library_name  # doctest: +SKIP
        'segcore'
    """
    from huggingface_hub import ModelCard

    config = getattr(model_or_config, "config", model_or_config)
    if num_params is None and hasattr(model_or_config, "parameters"):
        num_params = sum(p.numel() for p in model_or_config.parameters())
    extra = config.extra or {}
    name = str(extra.get("name") or repo_id or f"{config.encoder.replace(':', '-')}-{config.decoder}")
    data = _card_data(config, name)
    text = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(_body(config, name, num_params, repo_id)) + "\n"
    return ModelCard(_marked(text))


def scores_from_metrics(metrics_file: str | Path, best: bool = False) -> dict[str, Any] | None:
    """The last (or, with ``best``, the highest-mIoU) evaluation row of a training run's ``metrics.jsonl``."""
    path = Path(metrics_file)
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if isinstance(r.get("mIoU"), (int, float))]
    if not rows:
        return None
    return max(rows, key=lambda r: r["mIoU"]) if best else rows[-1]

"""State dicts: read checkpoint files safely, rename and split keys, load strictly with a mismatch report.

The lowest layer of segcore's weight I/O: it knows files and tensors, not models, converters or the Hub.
Files are read with safetensors or ``torch.load(weights_only=True)`` (no pickle code runs); a load that does not
match exactly raises a :class:`~segcore.errors.CheckpointError` listing what differs, grouped by module.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segcore.errors import CheckpointError

__all__ = ["load_state_dict_file", "split_prefix", "rename_keys", "mismatch_report", "load_strict"]

# Keys under which training frameworks nest the state dict ({"state_dict": {...}}, {"model": {...}}, ...).
_WRAPPERS = ("state_dict", "model", "module", "model_state", "params")


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint file safely and return its flat ``name -> tensor`` dict.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``.
    Wrappers such as ``{"state_dict": ...}`` or ``{"model": ...}`` are unwrapped, non-tensor entries dropped.

    Raises:
        CheckpointError: the file is missing, truncated, not a checkpoint, or needs pickle code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path))
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            "(is the file complete? re-download it; pickled objects other than tensors are refused for safety)"
        ) from err
    for _ in range(3):
        if isinstance(data, Mapping):
            inner = next((data[k] for k in _WRAPPERS if k in data and isinstance(data[k], Mapping)), None)
            if inner is not None and not any(isinstance(v, Tensor) for v in data.values()):
                data = inner
                continue
        break
    if not isinstance(data, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, not a state dict")
    tensors = {k: v for k, v in data.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint {path} holds no tensors (keys: {list(data)[:8]})")
    return tensors


def split_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Return the entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def rename_keys(state_dict: Mapping[str, Tensor], rules: Sequence[tuple[str, str]], what: str) -> dict[str, Tensor]:
    """Rename every key with the first ``(pattern, replacement)`` rule that matches it (``re.subn``).

    A key no rule matches is an error naming a few of them, so an unexpected layout never loads half-converted.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{what}: {len(unknown)} keys not understood, e.g. {unknown[:5]}")
    return out


def _group(keys: list[str], depth: int = 2) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        parts = key.split(".")
        groups[".".join(parts[:depth])].append(".".join(parts[depth:]) or key)
    return dict(groups)


def mismatch_report(
    missing: list[str], unexpected: list[str], shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
) -> str:
    """Describe a state-dict mismatch grouped by module, as a multi-line string."""
    lines = []
    for title, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            lines.append(f"{len(keys)} {title} keys:")
            for module, names in sorted(_group(keys).items()):
                shown = ", ".join(names[:6]) + (f", ... (+{len(names) - 6})" if len(names) > 6 else "")
                lines.append(f"  {module}: {shown}")
    if shapes:
        lines.append(f"{len(shapes)} keys with the wrong shape (checkpoint vs model):")
        for key, got, want in shapes[:20]:
            lines.append(f"  {key}: {list(got)} vs {list(want)}")
        if len(shapes) > 20:
            lines.append(f"  ... (+{len(shapes) - 20})")
    return "\n".join(lines)


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Load ``state_dict`` into ``module`` requiring an exact match of keys and shapes.

    Raises:
        CheckpointError: with :func:`mismatch_report` of what differs.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        (k, tuple(state_dict[k].shape), tuple(own[k].shape))
        for k in sorted(set(own) & set(state_dict))
        if tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source} does not match the model:\n{mismatch_report(missing, unexpected, shapes)}\n"
            "Check that encoder, decoder, num_classes and options match the checkpoint's (or pass "
            "official_config=), and that the file was converted with the right format."
        )
    module.load_state_dict(dict(state_dict), strict=True)

"""The training state in a checkpoint, written and read without unpickling, and the checkpoint a resume starts from.

A checkpoint ``checkpoints/iter_<N>/`` (written atomically by :func:`segcore.train.checkpointing.save_atomic`)
holds safetensors and JSON only, so that resuming a run folder that came from elsewhere never runs its code:

* ``model.safetensors``: the model's weights;
* ``optimizer.safetensors``: the optimiser's tensors, with the rest of its ``state_dict`` as JSON in the header
  (``scaler.safetensors``, fp16's gradient scaler, likewise);
* ``ema.safetensors``: the EMA's decay and averaged weights (runs with an EMA);
* ``rng_<rank>.safetensors``: every random generator of process ``<rank>`` (Python, NumPy, torch's CPU and CUDA
  generators) and Accelerate's step count;
* ``trainer_state.json``: iteration, best mIoU, seed and :data:`STATE_FORMAT`, written last.

Earlier versions saved Accelerate's ``save_state`` folder (``optimizer.bin``, ``random_states_<rank>.pkl``,
``custom_checkpoint_0.pkl``, ``scaler.pt``). Those pickles are read with ``torch.load(weights_only=True)``, which
builds tensors and plain containers only; one it refuses (a pickle naming a function to call, a garbled file) is
never loaded otherwise, and the message names it.

A resume is exact or does not happen: every file has to load exactly into the run's model, optimiser, EMA, scaler
and generators, or the checkpoint is not used. :func:`resume` then takes the next older one, saying which it
skipped and why, or refuses when none loads.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segcore.errors import TrainingError
from segcore.train.checkpointing import list_checkpoints, read_state, storage_error

__all__ = ["STATE_FORMAT", "save_state", "load_state", "resume"]

logger = logging.getLogger("segcore.train")

STATE_FORMAT = 2  # trainer_state.json "format"; checkpoints without it are Accelerate's save_state folders
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
EMA_FILE = "ema.safetensors"
SCALER_FILE = "scaler.safetensors"
_HEADER = "segcore_state"  # the safetensors metadata entry holding the JSON part of a state
_LEGACY = {"optimizer": "optimizer.bin", "ema": "custom_checkpoint_0.pkl", "scaler": "scaler.pt"}


def _rng_file(rank: int) -> str:
    return f"rng_{rank}.safetensors"


# --------------------------------------------------------------------------------------- state trees on disk
def _pack(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON; each tensor goes into ``tensors`` under its path and the JSON names it."""
    if isinstance(value, torch.Tensor):
        if key in tensors:
            raise ValueError(f"two state entries are stored as {key!r}")
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
        return {"tensor": key}
    if isinstance(value, dict):
        if not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in value):
            raise TypeError(f"state keys under {key!r} must be strings or integers")
        return {"dict": [[k, _pack(v, f"{key}/{k}" if key else str(k), tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_pack(v, f"{key}/{i}" if key else str(i), tensors) for i, v in enumerate(value)]
        return {"list" if isinstance(value, list) else "tuple": items}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} ({key!r}) in a checkpoint")


def _unpack(node: Any, tensors: Mapping[str, torch.Tensor], used: set[str]) -> Any:
    """The value :func:`_pack` stored as ``node``; raises ValueError on anything it would not have written."""
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, dict) and len(node) == 1:
        ((kind, body),) = node.items()
        if kind == "tensor" and isinstance(body, str) and body in tensors and body not in used:
            used.add(body)
            return tensors[body]
        if kind in ("list", "tuple") and isinstance(body, list):
            items = [_unpack(v, tensors, used) for v in body]
            return items if kind == "list" else tuple(items)
        pairs = body if kind == "dict" and isinstance(body, list) else None
        if pairs is not None and all(isinstance(p, list) and len(p) == 2 for p in pairs):
            keys = [k for k, _ in pairs]
            if all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in keys) and len(set(keys)) == len(keys):
                return {k: _unpack(v, tensors, used) for k, v in pairs}
    raise ValueError(f"not an entry segcore writes: {json.dumps(node)[:80]}")


def _save_tree(path: Path, tree: Any) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    header = json.dumps(_pack(tree, "", tensors))
    _write(path, lambda: save_file(tensors, str(path), metadata={"format": "pt", _HEADER: header}))


def _load_tree(path: Path) -> Any:
    from safetensors import safe_open

    if not path.is_file():
        raise ValueError("missing")
    with safe_open(str(path), "pt", device="cpu") as handle:
        header = (handle.metadata() or {}).get(_HEADER)
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open has no __iter__
    if header is None:
        raise ValueError(f"not a segcore state file (no {_HEADER!r} entry in its header)")
    used: set[str] = set()
    tree = _unpack(json.loads(header), tensors, used)
    if used != tensors.keys():
        raise ValueError(f"holds tensors that no entry names ({', '.join(sorted(set(tensors) - used)[:3])})")
    return tree


def _write(path: Path, write: Any) -> None:
    """Run ``write``; safetensors' own errors (``SafetensorError``, no errno) become one naming ``path``."""
    try:
        write()
    except (OSError, RuntimeError):
        raise  # save_atomic names the checkpoint and the cause
    except Exception as err:  # noqa: BLE001 - safetensors raises its own exception type
        raise storage_error(err, path, "checkpoint file") from err


def _torch_load(path: Path) -> Any:
    """An earlier version's pickle with ``torch.load(weights_only=True)``: tensors and containers, never code.

    NumPy arrays are allowed as Accelerate's own loader allows them (its random states hold one).
    """
    import codecs
    import pickle

    import numpy as np

    if not path.is_file():
        raise ValueError("missing")
    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype, codecs.encode, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. Please|\n\n|$)", str(err), re.S)
        detail = " ".join((found.group(1) if found else "not a torch file").split())
        raise ValueError(
            f"refused: torch.load(weights_only=True) does not load it ({detail}); segcore never unpickles a "
            "checkpoint with weights_only=False, which can run code. Resume from a checkpoint this version wrote"
        ) from err


# ------------------------------------------------------------------------------------------------ writing
def _rng_state(step: int) -> dict[str, Any]:
    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "step": int(step),
    }


def save_state(folder: Path, accelerator: Any, model: torch.nn.Module, optimizer: Any, ema: Any) -> None:
    """Write the training state into ``folder``: call it on every process (the main one writes the shared files).

    Args:
        folder: the checkpoint's (temporary) folder.
        accelerator: the run's Accelerator (process index, step count, fp16 gradient scaler).
        model: the model itself (not its DDP wrapper).
        optimizer: the prepared optimiser.
        ema: the run's :class:`~segcore.train.ema.ModelEMA`, or ``None``.
    """
    from safetensors.torch import save_file

    if accelerator.is_main_process:
        weights = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
        _write(folder / MODEL_FILE, lambda: save_file(weights, str(folder / MODEL_FILE), metadata={"format": "pt"}))
        _save_tree(folder / OPTIMIZER_FILE, optimizer.state_dict())
        if ema is not None:
            _save_tree(folder / EMA_FILE, ema.state_dict())
        if accelerator.scaler is not None:
            _save_tree(folder / SCALER_FILE, accelerator.scaler.state_dict())
    _save_tree(folder / _rng_file(accelerator.process_index), _rng_state(accelerator.step))


# ------------------------------------------------------------------------------------------------ reading
@dataclass
class _Pieces:
    """What a checkpoint's files hold, read but not yet set; ``names`` gives the file of each piece."""

    model: dict[str, torch.Tensor]
    optimizer: Any
    ema: Any
    scaler: Any
    rng: Any
    names: dict[str, str]


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _read_file(ckpt: Path, name: str, read: Any) -> Any:
    try:
        return read(ckpt / name)
    except Exception as err:  # noqa: BLE001 - any failure means the file does not load; it is named
        raise ValueError(f"{name}: {_first_line(err)}") from err


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ValueError("missing")
    return load_file(str(path))


def _legacy_rng(states: Any) -> dict[str, Any]:
    """Accelerate's ``random_states_<rank>.pkl`` content in the form of :func:`_rng_state`."""
    import numpy as np

    needed = {"step", "random_state", "numpy_random_seed", "torch_manual_seed"}
    if not isinstance(states, dict) or not needed <= states.keys():
        raise ValueError(f"not Accelerate's random states (needs {', '.join(sorted(needed))})")
    numpy_state = states["numpy_random_seed"]
    if not isinstance(numpy_state, tuple) or len(numpy_state) != 5 or not isinstance(numpy_state[1], np.ndarray):
        raise ValueError("numpy_random_seed is not a NumPy generator state")
    name, keys, *rest = numpy_state
    return {
        "python": states["random_state"],
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), *rest),
        "torch": states["torch_manual_seed"],
        "cuda": states.get("torch_cuda_manual_seed"),
        "step": states["step"],
    }


def _read(ckpt: Path, legacy: bool, accelerator: Any, ema: bool) -> _Pieces:
    """Read every file the run needs from ``ckpt``; ValueError names the first that does not load."""
    rank, world, scaler = accelerator.process_index, accelerator.num_processes, accelerator.scaler is not None
    pattern = "random_states_*.pkl" if legacy else "rng_*.safetensors"
    if len(list(ckpt.glob(pattern))) != world:
        raise ValueError(
            f"it holds the random state of {len(list(ckpt.glob(pattern)))} processes ({pattern}) and this run has "
            f"{world}: resume with as many processes as wrote it"
        )
    if legacy:
        names = {"model": MODEL_FILE, **_LEGACY, "rng": f"random_states_{rank}.pkl"}
        weights = _read_file(ckpt, MODEL_FILE, _load_weights)
        # Accelerate saved the loss wrapper (``model.``), under DDP also its ``module.``.
        model = {re.sub(r"^(module\.)?model\.", "", k): v for k, v in weights.items()}
        read_tree, rng = _torch_load, _read_file(ckpt, names["rng"], lambda p: _legacy_rng(_torch_load(p)))
    else:
        names = {"model": MODEL_FILE, "optimizer": OPTIMIZER_FILE, "ema": EMA_FILE, "scaler": SCALER_FILE}
        names["rng"] = _rng_file(rank)
        model, read_tree = _read_file(ckpt, MODEL_FILE, _load_weights), _load_tree
        rng = _read_file(ckpt, names["rng"], _load_tree)
    return _Pieces(
        model=model,
        optimizer=_read_file(ckpt, names["optimizer"], read_tree),
        ema=_read_file(ckpt, names["ema"], read_tree) if ema else None,
        scaler=_read_file(ckpt, names["scaler"], read_tree) if scaler else None,
        rng=rng,
        names=names,
    )


# ------------------------------------------------------------------------------------------- exact checks
def _check_tensors(name: str, loaded: Any, expected: Mapping[str, torch.Tensor]) -> None:
    """``loaded`` has exactly ``expected``'s keys, shapes and dtypes."""
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{name}: not a mapping of names to tensors")
    missing, unexpected = sorted(set(expected) - set(loaded)), sorted(set(loaded) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{name}: {len(missing)} tensors missing ({', '.join(missing[:3])}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:3])}): not this run's model"
        )
    for key, value in expected.items():
        got = loaded[key]
        if got.shape != value.shape or got.dtype != value.dtype:
            raise ValueError(
                f"{name}: {key} is {got.dtype} {tuple(got.shape)}, the run's is {value.dtype} {tuple(value.shape)}"
            )


def _check_optimizer(name: str, state: Any, optimizer: Any) -> None:
    """``state`` fits ``optimizer``: its groups' settings (but ``lr``, set every step), parameters and shapes."""
    if not (
        isinstance(state, dict) and isinstance(state.get("state"), dict) and isinstance(state.get("param_groups"), list)
    ):
        raise ValueError(f"{name}: not an optimiser state (state, param_groups)")
    groups, params = optimizer.param_groups, {}
    if len(state["param_groups"]) != len(groups):
        raise ValueError(f"{name}: {len(state['param_groups'])} parameter groups, the run has {len(groups)}")
    for i, (group, saved) in enumerate(zip(groups, state["param_groups"])):
        ids = saved.get("params") if isinstance(saved, dict) else None
        if not isinstance(ids, list) or len(ids) != len(group["params"]):
            raise ValueError(f"{name}: parameter group {i} does not hold the run's {len(group['params'])} parameters")
        for key in sorted(set(group) - {"params", "lr"}):
            if key not in saved or saved[key] != group[key]:
                raise ValueError(
                    f"{name}: parameter group {i} has {key} {saved.get(key, 'missing')!r}, the run's is {group[key]!r}"
                )
        params.update(zip(ids, group["params"]))
    for index, entry in state["state"].items():
        if index not in params or not isinstance(entry, dict):
            raise ValueError(f"{name}: state of parameter {index!r}, which the run does not have")
        for key, value in entry.items():
            like = params[index]
            if (
                isinstance(value, torch.Tensor)
                and value.dim()
                and (value.shape, value.dtype) != (like.shape, like.dtype)
            ):
                raise ValueError(
                    f"{name}: {key} of parameter {index} is {value.dtype} {tuple(value.shape)}, "
                    f"the parameter is {like.dtype} {tuple(like.shape)}"
                )


def _check_ema(name: str, state: Any, ema: Any) -> None:
    if not isinstance(state, dict) or set(state) != {"decay", "shadow"}:
        raise ValueError(f"{name}: not an EMA state (decay, shadow)")
    if state["decay"] != ema.decay:
        raise ValueError(f"{name}: EMA decay {state['decay']!r}, the run's is {ema.decay!r}")
    _check_tensors(name, state["shadow"], ema.shadow)


def _check_scaler(name: str, state: Any, scaler: Any) -> None:
    expected = scaler.state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        raise ValueError(f"{name}: not a gradient scaler state ({', '.join(sorted(expected))})")
    for key, value in state.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}: {key} is {value!r}, not a finite number")


def _check_rng(name: str, state: Any) -> None:
    """``state`` is what :func:`_rng_state` writes, for a machine with as many CUDA devices as this one."""
    if not isinstance(state, dict) or set(state) != {"python", "numpy", "torch", "cuda", "step"}:
        raise ValueError(f"{name}: not a random state (python, numpy, torch, cuda, step)")
    python, numpy_state, cpu, cuda, step = (state[k] for k in ("python", "numpy", "torch", "cuda", "step"))
    version, words, gauss = python if isinstance(python, tuple) and len(python) == 3 else (None,) * 3
    if not (
        version == 3
        and isinstance(words, tuple)
        and len(words) == 625
        and all(type(w) is int and 0 <= w < 2**32 for w in words)
        and (gauss is None or type(gauss) is float)
    ):
        raise ValueError(f"{name}: python is not a state of Python's random generator")
    name_np, keys, pos, has_gauss, cached = (
        numpy_state if isinstance(numpy_state, tuple) and len(numpy_state) == 5 else (None,) * 5
    )
    if not (
        name_np == "MT19937"
        and isinstance(keys, torch.Tensor)
        and keys.dtype == torch.int64
        and keys.shape == (624,)
        and bool(((keys >= 0) & (keys < 2**32)).all())
        and type(pos) is int
        and 0 <= pos <= 624
        and has_gauss in (0, 1)
        and type(cached) is float
    ):
        raise ValueError(f"{name}: numpy is not a state of NumPy's MT19937 generator")
    if not (isinstance(cpu, torch.Tensor) and cpu.dtype == torch.uint8 and cpu.shape == torch.get_rng_state().shape):
        raise ValueError(f"{name}: torch is not a state of torch's CPU generator")
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(cuda or []) != devices or not all(
        isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda or []
    ):
        raise ValueError(
            f"{name}: it holds the random state of {len(cuda or [])} CUDA devices and this machine has {devices}: "
            "resume on a machine like the one that wrote it"
        )
    if type(step) is not int or step < 0:
        raise ValueError(f"{name}: step is {step!r}, not a count")


def _set_rng(state: dict[str, Any], accelerator: Any) -> None:
    import numpy as np

    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    accelerator.step = state["step"]  # counts micro-batches: which of them syncs gradients


def load_state(ckpt: Path, state: Mapping[str, Any], accelerator: Any, model: Any, optimizer: Any, ema: Any) -> None:
    """Set the run's model, optimiser, EMA, scaler and generators from ``ckpt``, exactly, or change nothing.

    Every file is read and checked against the run before anything is set.

    Args:
        ckpt: the checkpoint folder.
        state: its :data:`~segcore.train.checkpointing.STATE_FILE`, as :func:`read_state` returns it.
        accelerator: the run's Accelerator.
        model: the model itself (not its DDP wrapper).
        optimizer: the prepared optimiser.
        ema: the run's EMA, or ``None``.

    Raises:
        ValueError: naming the file that does not load, or does not fit the run, and why.
    """
    fmt = state.get("format")
    if fmt not in (None, STATE_FORMAT):
        raise ValueError(f"trainer_state.json: format {fmt!r} is not one this segcore reads ({STATE_FORMAT})")
    pieces = _read(ckpt, fmt is None, accelerator, ema is not None)
    names = pieces.names
    _check_tensors(names["model"], pieces.model, model.state_dict())
    _check_optimizer(names["optimizer"], pieces.optimizer, optimizer)
    if ema is not None:
        _check_ema(names["ema"], pieces.ema, ema)
    if accelerator.scaler is not None:
        _check_scaler(names["scaler"], pieces.scaler, accelerator.scaler)
    _check_rng(names["rng"], pieces.rng)
    model.load_state_dict(pieces.model, strict=True)
    optimizer.load_state_dict(pieces.optimizer)
    if ema is not None:
        ema.load_state_dict(pieces.ema)
    if accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(pieces.scaler)
    _set_rng(pieces.rng, accelerator)


# ------------------------------------------------------------------------------------------------- resume
def _agree(accelerator: Any, error: str | None) -> str | None:
    """Every process's verdict on a checkpoint, so that all of them resume from the same one."""
    if accelerator.num_processes == 1:
        return error
    from accelerate.utils import gather_object

    errors = gather_object([error])
    return "; ".join(f"process {i}: {e}" for i, e in enumerate(errors) if e) or None


def resume(
    out: Path, seed: int, iters: int, accelerator: Any, model: Any, optimizer: Any, ema: Any
) -> tuple[int, float]:
    """Load the newest checkpoint under ``out`` that loads exactly; ``(iteration, best mIoU)``. Reads only.

    A checkpoint whose ``trainer_state.json`` is invalid (see :func:`read_state`), or whose files do not load
    exactly, is skipped; the warning names it and why.

    Raises:
        TrainingError: naming each checkpoint and why it did not load, when none does; or when ``iters`` is
            below the checkpoint's iteration.
    """
    failures = []
    for ckpt in list_checkpoints(out / "checkpoints"):
        error = None
        try:
            state = read_state(ckpt)
            start, best = state["iter"], float(state.get("best_mIoU", -math.inf))
            if state.get("seed", seed) != seed:
                raise ValueError(f"trainer_state.json: seed {state['seed']!r}, the run's is {seed}")
            if start <= iters:
                load_state(ckpt, state, accelerator, model, optimizer, ema)
        except Exception as err:  # noqa: BLE001 - every failure is reported, in words
            error = _first_line(err)
        error = _agree(accelerator, error)
        if error is not None:
            failures.append(f"{ckpt.name}: {error}")
            continue
        if start > iters:
            raise TrainingError(
                f"cannot resume {out}: --iters {iters} is below iteration {start} of its checkpoint {ckpt.name}; "
                f"give --iters {start} or more"
            )
        if accelerator.is_main_process:
            skipped = f"; not from the newer {'; '.join(failures)}" if failures else ""
            logger.warning("resuming from %s (iteration %d)%s", ckpt, start, skipped)
        return start, best
    if failures:
        raise TrainingError(
            f"cannot resume {out}: no checkpoint loads exactly ({'; '.join(failures)}); nothing was changed"
        )
    partial = sorted(p.name for p in (out / "checkpoints").glob(".tmp-*"))
    raise TrainingError(
        f"cannot resume {out}: it holds no complete checkpoint"
        + (f" (only the unfinished {', '.join(partial)})" if partial else "")
        + "; nothing was changed. Start a new run with --overwrite, or in another --output-dir"
    )

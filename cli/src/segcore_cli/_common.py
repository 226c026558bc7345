"""Helpers shared by sub-commands (torch-free at import)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from typing import Any


def add_component_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--encoder-opt`` / ``--decoder-opt`` (repeatable ``key=value``)."""
    parser.add_argument(
        "--encoder-opt",
        action="append",
        default=[],
        metavar="K=V",
        help="encoder option, repeatable (e.g. drop_path_rate=0.1, embed_dims=32,64,160,256)",
    )
    parser.add_argument(
        "--decoder-opt",
        action="append",
        default=[],
        metavar="K=V",
        help="decoder option, repeatable (e.g. channels=128)",
    )


# ``--precision``: what :func:`segcore.evaluation.inference.precision` takes, for every command that runs a model.
PRECISION_HELP = (
    "bf16: run the model under bfloat16 autocast, faster where the hardware has bf16 matrix units (recent GPUs, "
    "CPUs with AMX); scores differ from fp32 by rounding"
)


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--precision fp32|bf16`` (``segcore benchmark``; eval and predict declare it as a field)."""
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help=PRECISION_HELP + " (default fp32)"
    )


def option_pairs(kind: str, pairs: Sequence[str]) -> dict[str, str]:
    """Turn ``["k=v", ...]`` (``--encoder-opt``, ``--decoder-opt``, ``--dataset-opt``) into ``{k: "v"}``, untyped.

    Keys may be spelled with ``-`` or ``_``. ``segcore train`` passes these to the resolution, which types them
    after the components the run turns out to use (on ``--resume`` the run's, with ``--init-from`` M's).
    """
    from segcore.errors import OptionsError

    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise OptionsError(f"--{kind[:-1]}-opt expects key=value, got {pair!r}")
        out[key] = value.strip()
    return out


def parse_component_options(kind: str, name: str | None, pairs: Sequence[str]) -> dict[str, Any]:
    """Turn ``["k=v", ...]`` into typed options (:func:`option_pairs`, then typed).

    With a component ``name`` the values are typed after its options dataclass and an unknown key is an error
    naming the valid ones; without one they are typed by their look.
    """
    from segcore.config.options import coerce_option
    from segcore.plugins.registry import get_spec

    options_cls = get_spec(kind, name).load_options() if name else None
    return {k: coerce_option(options_cls, k, v, component=name or "") for k, v in option_pairs(kind, pairs).items()}


def print_json(data: Any) -> None:
    """Print one JSON document."""
    print(json.dumps(data, indent=2, default=str))


# ------------------------------------------------------------------------------------------------ flag values
# Every numeric flag takes one of the types below, so that a bad value stops at parsing with one line that names
# the flag and the valid range (argparse prefixes "argument --flag: "), before anything is loaded or written.
# Each type also lists values it must refuse (``bad_examples``): the table-driven CLI test feeds them to every
# flag, so a new flag is covered without a test edit.


class Number:
    """``type=`` of an int or float flag with a valid range, e.g. ``Number(int, low=1)`` for ``--iters``.

    The range is a :class:`segcore.config.fields.Range` (the settings declare theirs there). Floats must be finite.
    ``low``/``high`` are inclusive unless ``low_open``/``high_open``.
    """

    def __init__(
        self,
        kind: type[int] | type[float],
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
    ) -> None:
        """Describe the accepted values.

        Args:
            kind: ``int`` or ``float``.
            low: smallest value, or ``None`` for no lower bound.
            high: largest value, or ``None`` for no upper bound.
            low_open: ``low`` itself is refused.
            high_open: ``high`` itself is refused.
        """
        from segcore.config.fields import Range

        self.range = Range(kind, low, high, low_open, high_open)
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.__name__ = kind.__name__  # argparse names the type in some messages

    def describe(self) -> str:
        """The valid range in words, e.g. ``an integer >= 1`` or ``a number in (0, 1)``."""
        return self.range.describe()

    def __call__(self, text: str) -> int | float:
        """Parse ``text``; raise :class:`argparse.ArgumentTypeError` naming the range when it is out of it."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        if not self.range.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")
        return value

    @property
    def bad_examples(self) -> tuple[str, ...]:
        """Values this type must refuse: not a number, just outside each bound, and for floats nan and inf."""
        step = 1 if self.kind is int else 1e-3
        out = ["x"]
        if self.low is not None:
            out.append(_text(self.low if self.low_open else self.low - step, self.kind))
        if self.high is not None:
            out.append(_text(self.high if self.high_open else self.high + step, self.kind))
        if self.kind is float:
            out += ["nan", "inf"]
        else:
            out.append("1.5")
        return tuple(out)

    def __repr__(self) -> str:
        return f"Number({self.describe()})"


def _text(value: float, kind: type) -> str:
    return str(int(value)) if kind is int else repr(float(value))


class SizePair:
    """``type=`` of a size flag given as ``S`` or ``H,W`` (also ``HxW``): positive integers, returned as ``(H, W)``.

    ``high`` is the largest side accepted (``None``: no limit).
    """

    __name__ = "size"
    bad_examples = ("0", "-4", "8,0", "1,2,3", "x", "4.5", "")

    def __init__(self, high: int | None = None) -> None:
        """Accept sides up to ``high``."""
        self.high = high
        if high is not None:
            self.bad_examples = (*SizePair.bad_examples, str(high + 1))

    def __call__(self, text: str) -> tuple[int, int]:
        """Parse ``text`` into ``(H, W)``."""
        try:
            parts = [int(p) for p in text.replace("x", ",").split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be S or H,W with positive integers, got {text!r}") from None
        if len(parts) not in (1, 2) or min(parts) < 1:
            raise argparse.ArgumentTypeError(f"must be S or H,W with positive integers, got {text!r}")
        if self.high is not None and max(parts) > self.high:
            raise argparse.ArgumentTypeError(f"must be S or H,W with sides up to {self.high}, got {text!r}")
        return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


class PositiveList:
    """``type=`` of a comma-separated list of numbers > 0 (``--scales 0.5,1.0,1.5``), returned as a tuple."""

    __name__ = "list"
    bad_examples = ("0", "1.0,0", "-1", "x", "nan", "inf", "1.0,,2.0", "")

    def __call__(self, text: str) -> tuple[float, ...]:
        """Parse ``text`` into a tuple of floats."""
        try:
            values = tuple(float(p) for p in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be numbers > 0 separated by commas, got {text!r}") from None
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise argparse.ArgumentTypeError(f"must be numbers > 0 separated by commas, got {text!r}")
        return values


class NonEmpty:
    """``type=`` of a path flag that must not be empty (``--output-dir "$UNSET"`` would mean the current folder)."""

    __name__ = "path"
    bad_examples = ("", "  ")

    def __call__(self, text: str) -> str:
        """Return ``text`` unless it is empty or blank."""
        if not text.strip():
            raise argparse.ArgumentTypeError("must not be empty (an unset shell variable?)")
        return text


class SingleName:
    """``type=`` of a name trackers make a folder of (``--tracker-project``, ``--run-name``): one path component.

    ``../../x`` would put the tracker's files outside the run folder.
    """

    __name__ = "name"
    bad_examples = ("", " ", "../../x", "a/b", "..", ".", "a\\b", "a\tb")

    def __call__(self, text: str) -> str:
        """Return ``text`` unless it is empty, a path, ``.``, ``..`` or holds control characters."""
        from segcore.config.fields import not_a_single_name

        problem = not_a_single_name(text)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return text


class NameList:
    """``type=`` of a comma-separated list of names (``--log-with tensorboard,wandb``), returned as a list."""

    __name__ = "names"
    bad_examples = ("", ",", "tensorboard,,wandb")

    def __call__(self, text: str) -> list[str]:
        """Parse ``text`` into a list of non-empty names."""
        names = [p.strip() for p in text.split(",")]
        if not all(names):
            raise argparse.ArgumentTypeError(f"must be one or more names separated by commas, got {text!r}")
        return names


# The ranges shared by several commands.
POSITIVE_INT = Number(int, low=1)
COUNT = Number(int, low=0)
NUM_CLASSES = Number(int, low=2)  # one class is no segmentation: binary needs background and foreground
SEED = Number(int, low=0, high=2**32 - 1)  # what numpy's and Python's seeding accept
TOLERANCE = Number(float, low=0)

"""Every numeric flag of every sub-command refuses bad values at parsing: one line naming the flag, exit status 2.

The table is generated from the argparse parsers themselves, so a new flag is covered without a test edit: a
flag typed with one of ``segcore_cli._common``'s validating types is fed that type's ``bad_examples``, and a
plain ``type=int`` or ``type=float`` flag fails :func:`test_every_numeric_flag_declares_its_range`. Flags with
``choices`` get a value outside them.
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest
from segcore_cli.main import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(command path, parser)`` of every sub-command, nested ones (``data check``) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def _flags():
    for path, parser in _commands(build_parser()):
        for action in parser._actions:
            if action.option_strings and (action.type is not None or action.choices):
                yield path, action.option_strings[-1], action


def _bad_cases():
    cases = []
    for path, flag, action in _flags():
        bad = ("no-such-choice",) if action.choices else getattr(action.type, "bad_examples", ())
        for value in bad:
            cases.append(pytest.param(path, flag, value, id=f"{' '.join(path)} {flag} {value!r}"))
    return cases


def test_every_numeric_flag_declares_its_range():
    plain = {(" ".join(path), flag) for path, flag, action in _flags() if action.type in (int, float)}
    assert not plain, f"give these flags a validating type from segcore_cli._common: {plain}"
    assert len(_bad_cases()) > 100  # the walk found the flags


@pytest.mark.parametrize(("path", "flag", "value"), _bad_cases())
def test_bad_value_is_one_line_naming_the_flag_and_exits_2(path, flag, value, capsys):
    # --flag=VALUE: a value that starts with "-" would otherwise read as another option.
    with pytest.raises(SystemExit) as info:
        main([*path, f"{flag}={value}"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"argument {flag}" in lines[0] and ("must" in lines[0] or "invalid choice" in lines[0]), lines[0]
    assert "Traceback" not in err


def test_train_settings_refuse_what_the_train_flags_refuse():
    """Python callers get the same ranges as the command line (``TrainSettings`` checks its fields)."""
    from segcore.train import TrainingError, TrainSettings

    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    checked = 0
    for path, flag, action in _flags():
        kind = getattr(action.type, "kind", None)
        if path != ("train",) or action.dest not in fields or kind is None:
            continue
        for value in action.type.bad_examples:
            try:
                number = kind(value)
            except ValueError:
                continue  # not a number at all: only the command line sees text
            with pytest.raises(TrainingError, match=flag):
                TrainSettings(**{action.dest: number})
            checked += 1
    assert checked >= 20


def test_values_in_range_parse():
    parser = build_parser()
    args = parser.parse_args(
        ["train", "--iters", "1", "--ema", "0.999", "--clip-grad", "0.1", "--eval-every", "0", "--crop-size", "32,48"]
    )
    assert (args.iters, args.ema_decay, args.clip_grad, args.eval_every, args.crop_size) == (1, 0.999, 0.1, 0, (32, 48))
    args = parser.parse_args(["eval", "--model", "m", "--stride", "8", "--scales", "0.5,1.0", "--crop-size", "16x24"])
    assert (args.stride, args.scales, args.crop_size) == ((8, 8), (0.5, 1.0), (16, 24))
    assert parser.parse_args(["benchmark", "--iters", "0"]).iters == 0  # 0: count only, a valid value


def test_train_help_lists_the_flags_resume_may_change():
    """The --help text is written out (building the parser must not import torch): keep it in step with core."""
    from segcore.train.resolve import flag_of
    from segcore.train.schema import RESUME_MAY_CHANGE
    from segcore_cli.commands.train import resume_text

    text = " ".join(resume_text().split())
    assert RESUME_MAY_CHANGE and "--iters" in text
    for name in RESUME_MAY_CHANGE:
        assert flag_of(name) in text, name

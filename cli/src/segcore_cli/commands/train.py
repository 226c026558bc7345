"""``segcore train``: train any encoder with any decoder; a recipe is a preset and every flag overrides it."""

from __future__ import annotations

import argparse
import os
import textwrap
from typing import Any

from segcore_cli._common import option_pairs, parse_component_options

_OPTIONS = ("encoder_opt", "decoder_opt", "dataset_opt")  # typed after the components the run uses, below


def resume_text() -> str:
    """The epilog of ``segcore train --help``: what ``--resume`` keeps and which flags it lets change."""
    from segcore.train.schema import TrainSettings

    from segcore_cli.flags import resume_help

    resume = (
        "--resume continues the run in --output-dir from its newest checkpoint that loads, with the run's own "
        "settings (its settings.json): leave the other flags out. A flag that contradicts the run is an error; only "
        f"{resume_help(TrainSettings)} may change (and --output-dir, --overwrite and --no-progress, which are about "
        "this command). If no checkpoint loads, nothing is written and the error names each one and why."
    )
    folder = (
        "--output-dir must be missing, empty, or a run folder segcore made: a folder holding anything else is refused "
        "unless --overwrite. --overwrite first removes what an earlier run there wrote, as listed in its manifest (the "
        ".segcore-run marker records each file and folder before the run writes it), and says what it left; nothing "
        "that segcore did not write is removed or replaced. A folder where a name the run writes (config.json, "
        "checkpoints/, eval/, best/, ...) is taken by something no manifest lists is refused, even with --overwrite; "
        "a README.md of yours is kept and the model card skipped. A running run locks its folder (.segcore-run.lock "
        "holds its PID). SIGTERM saves a checkpoint, says where, and exits 143."
    )
    return "\n\n".join(textwrap.fill(text, 110) for text in (resume, folder))


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` parser: one argument per declared field of ``TrainSettings``, plus --dry-run and --json."""
    from segcore.train.schema import TrainSettings

    from segcore_cli.flags import add_settings

    p = sub.add_parser(
        "train",
        help="train a model (Accelerate: CPU, GPU, multi-GPU with accelerate launch)",
        description="Train an encoder + decoder. A --recipe gives every setting; flags override "
        "it. With no recipe and synthetic-shapes the CPU preset is used.",
        epilog=resume_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings(p, TrainSettings)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the fully resolved run (model options, parameter groups, schedule, pipelines, eval protocol, "
        "batch split) and exit: no data is read, no weights are created, nothing is written",
    )
    p.add_argument("--json", action="store_true", help="print JSON (the final metrics, or the --dry-run plan)")
    p.set_defaults(run=run)


def settings_from(args: argparse.Namespace) -> Any:
    """The ``TrainSettings`` of the parsed flags; ``--encoder-opt`` / ``--decoder-opt`` stay text for the resolution.

    The run is resolved once, by the trainer (or the dry run): it types those options after the components it
    decides on (on ``--resume`` the run's own, with ``--init-from`` M's).
    """
    from segcore.train import TrainSettings

    from segcore_cli.flags import settings_kwargs

    return TrainSettings(
        **settings_kwargs(TrainSettings, args, skip=_OPTIONS),
        encoder_opt=option_pairs("encoders", args.encoder_opt),
        decoder_opt=option_pairs("decoders", args.decoder_opt),
        dataset_opt=parse_component_options("datasets", args.dataset, args.dataset_opt),
    )


def run(args: argparse.Namespace) -> int:
    """Train and print where the results are."""
    import json

    from segcore.train import train

    settings = settings_from(args)
    if args.dry_run:
        from segcore.train import plan

        resolved_plan = plan(settings)
        print(json.dumps(resolved_plan, indent=2) if args.json else format_plan(resolved_plan))
        return 0
    out = train(settings)
    if os.environ.get("RANK", "0") != "0":  # under `accelerate launch`, only the main process reports
        return 0
    _report(out, args.json)
    return 0


def _report(out: Any, as_json: bool) -> None:
    import json

    last = None
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if "mIoU" in row:
                last = row
    if as_json:
        print(
            json.dumps(
                {"output_dir": str(out), **({k: last[k] for k in ("iter", "mIoU", "mAcc", "aAcc")} if last else {})}
            )
        )
        return
    if last:
        print(f"final validation: mIoU {last['mIoU']:.2f}  mAcc {last['mAcc']:.2f}  aAcc {last['aAcc']:.2f}")
    print(f"model: {out}   curves: {out / 'curves.png'}   best: {out / 'best'}")


def _kv(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "(none)"


def _init_lines(init: dict | None) -> list[str]:
    """What ``--init-from`` sets, for the plan (nothing without it)."""
    if not init:
        return []
    if "encoder" not in init:
        return [f"init from      {init['source']}: {init['config']}"]
    lines = [
        f"init from      {init['source']} ({init['config']}): sets encoder {init['encoder']}, decoder "
        f"{init['decoder']}, their options, normalisation and eval protocol, and every weight",
        f"  its model     {init['num_classes']} classes, mean {tuple(init['mean'])}, std {tuple(init['std'])}, "
        f"eval {_kv(init['eval_protocol'] or {})}",
    ]
    if init.get("reinitialised"):
        lines.append(f"  new classes   re-initialised: {', '.join(init['reinitialised'])}")
    return lines


# The flags the lines above show in their own words; every other declared flag is listed under "other flags".
_SHOWN = {
    *("--encoder", "--decoder", "--dataset", "--data-root", "--recipe", "--iters", "--batch-size", "--crop-size"),
    *("--lr", "--weight-decay", "--pretrained-encoder", "--init-from", "--encoder-opt", "--decoder-opt"),
    *("--mixed-precision", "--output-dir", "--eval-every", "--checkpoint-every", "--keep-checkpoints", "--seed"),
    *("--grad-accum", "--clip-grad", "--ema", "--eval-mode", "--dataset-opt"),
}


def format_plan(plan: dict) -> str:
    """The ``--dry-run`` plan as text, one setting per line, in the order a paper's appendix lists them."""
    recipe, data, model, opt, sched = (
        plan["recipe"],
        plan["dataset"],
        plan["model"],
        plan["optimizer"],
        plan["schedule"],
    )
    pipe, batch = plan["train_pipeline"], plan["batch"]
    lines = [
        f"recipe          {recipe['name'] or '(none)'}: {recipe['description']}",
        f"  source        {recipe['source']}",
        f"dataset         {data['name']} (root {data['root'] or '-'}), {data.get('num_classes', '?')} classes"
        + (f"  [{data['error']}]" if "error" in data else f", {data['train_samples']} training images"),
        f"model           {model['encoder'] or '(M)'} + {model['decoder'] or '(M)'}, "
        f"{model['num_classes'] or '?'} classes, "
        f"pretrained encoder: {'yes' if model['pretrained_encoder'] else 'no'}",
        f"  encoder       {_kv(model['encoder_options'])}",
        f"  decoder       {_kv(model['decoder_options'])}",
        f"  normalise     mean {tuple(model['mean'])}, std {tuple(model['std'])}, ignore index {model['ignore_index']}",
        *_init_lines(plan.get("init_from")),
        f"optimizer       {opt['type']}, lr {opt['lr']:g}, weight decay {opt['weight_decay']:g}, "
        f"betas {tuple(opt['betas'])}",
    ]
    for rule in opt["param_rules"]:
        lines.append(
            f"  rule          {rule['key']!r}: lr x{rule['lr_mult']:g} ({rule['lr']:g}), "
            f"decay x{rule['decay_mult']:g} ({rule['weight_decay']:g})"
        )
    lines.append(f"  unmatched     norm decay x{opt['norm_decay_mult']}, bias decay x{opt['bias_decay_mult']}")
    for group in opt["param_groups"] or []:
        lines.append(
            f"  group         lr {group['lr']:g}, decay {group['weight_decay']:g}: "
            f"{group['tensors']} tensors, {group['values']:,} values"
        )
    warm = f", linear warm-up {sched['warmup_iters']} iterations from x{sched['warmup_ratio']:g}"
    lines += [
        f"schedule        {sched['iters']} iterations, poly power {sched['power']:g}, min lr {sched['min_lr']:g}"
        + (warm if sched["warmup_iters"] else ""),
        f"clip grad       {'max L2 norm ' + format(plan['clip_grad'], 'g') if plan['clip_grad'] else 'none'}",
        f"train pipeline  crop {tuple(pipe['crop_size'])}, scale {pipe['scale'] and tuple(pipe['scale'])}, "
        f"ratio {pipe['ratio_range'] and tuple(pipe['ratio_range'])}, cat_max_ratio {pipe['cat_max_ratio']:g}, "
        f"flip {pipe['flip_prob']:g}",
        f"  photometric   {_kv(pipe['photometric']) if pipe['photometric'] else 'none'}",
        f"  normalise     mean {tuple(pipe['mean'])}, std {tuple(pipe['std'])}, then pad with {pipe['pad_value']:g}",
        f"eval protocol   ({plan['eval_protocol_source']}) {_kv(plan['eval_protocol'] or {})}",
        f"                every {plan['eval_every']} iterations; checkpoint every {plan['checkpoint_every']}, "
        f"keep the newest {plan['keep_checkpoints'] or 'all'}",
        f"batch           {batch['total']} = {batch['per_device']} per device x {batch['processes']} process(es) "
        f"x {batch['grad_accum']} accumulation step(s)",
        f"precision       {plan['mixed_precision']}, seed {plan['seed']}, EMA {plan['ema_decay'] or 'none'}",
        f"output          {plan['output_dir']}",
    ]
    others = {flag: value for flag, value in plan["settings"].items() if flag not in _SHOWN}
    lines += [f"{'other flags' if i == 0 else '':<16}{flag} {value}" for i, (flag, value) in enumerate(others.items())]
    return "\n".join(lines)

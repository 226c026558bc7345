"""``segcore train``: train any encoder with any decoder; a recipe is a preset and every flag overrides it."""

from __future__ import annotations

import argparse

from segcore_cli._common import (
    COUNT,
    POSITIVE_INT,
    SEED,
    NameList,
    NonEmpty,
    Number,
    SingleName,
    SizePair,
    parse_component_options,
)

RESUME_HELP = """--resume continues the run in --output-dir from its newest checkpoint that loads, with the run's own
settings (its settings.json): leave the other flags out. A flag that contradicts the run is an error; only
--iters (to extend or shorten the run; the schedule follows the new length), --eval-every, --checkpoint-every,
--keep-checkpoints, --log-every, --eval-mode, --max-eval-samples, --workers, --data-root, --tensorboard,
--log-with, --tracker-project, --run-name and --no-progress may change. If no checkpoint loads, nothing is
written and the error names each one and why.

--output-dir must be missing, empty, or a run folder segcore made: a folder holding anything else is refused
unless --overwrite. --overwrite first removes what an earlier run there wrote, as listed in its manifest (the
.segcore-run marker records each file and folder before the run writes it), and says what it left; nothing that
segcore did not write is removed or replaced. A folder where a name the run writes (config.json, checkpoints/,
eval/, best/, ...) is taken by something no manifest lists is refused, even with --overwrite; a README.md of
yours is kept and the model card skipped. A running run locks its folder (.segcore-run.lock holds its PID).
SIGTERM saves a checkpoint, says where, and exits 143."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` parser."""
    p = sub.add_parser(
        "train",
        help="train a model (Accelerate: CPU, GPU, multi-GPU with accelerate launch)",
        description="Train an encoder + decoder. A --recipe gives every setting; flags override "
        "it. With no recipe and synthetic-shapes the CPU preset is used.",
        epilog=RESUME_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--encoder", help="encoder name (see segcore list --kind encoders)")
    p.add_argument("--decoder", help="decoder name")
    p.add_argument("--dataset", help="dataset name (default: the recipe's; synthetic-shapes without a recipe)")
    p.add_argument("--data-root", help="dataset folder")
    p.add_argument("--recipe", help="training preset (see segcore list --kind recipes)")
    p.add_argument("--iters", type=POSITIVE_INT, help="training iterations")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="total batch = per device x processes x accumulation")
    p.add_argument("--crop-size", type=SizePair(), help="training crop S or H,W")
    p.add_argument("--lr", type=Number(float, low=0, low_open=True), help="base learning rate")
    p.add_argument("--weight-decay", type=Number(float, low=0), help="base weight decay")
    p.add_argument(
        "--pretrained-encoder",
        nargs="?",
        const=True,
        default=None,
        metavar="SOURCE",
        help="start from the encoder's pretrained weights: its registered ImageNet weights, or SOURCE (a registered "
        "encoder checkpoint name, a Hub repo id such as nvidia/mit-b2, or a folder)",
    )
    p.add_argument(
        "--init-from",
        type=NonEmpty(),
        metavar="M",
        help="fine-tune M (a model folder or finished run, a Hub repo id, a registered checkpoint): its encoder, "
        "decoder, options, normalisation, eval protocol and weights; a new classifier when the classes differ",
    )
    p.add_argument("--encoder-opt", action="append", default=[], metavar="K=V", help="encoder option (repeat)")
    p.add_argument("--decoder-opt", action="append", default=[], metavar="K=V", help="decoder option (repeat)")
    p.add_argument("--dataset-opt", action="append", default=[], metavar="K=V", help="dataset option (repeat)")
    p.add_argument(
        "--mixed-precision",
        choices=("no", "bf16", "fp16"),
        help="autocast precision (default no; fp16 needs a CUDA GPU, bf16 also runs on CPUs)",
    )
    p.add_argument(
        "--output-dir",
        type=NonEmpty(),
        default="runs/segcore",
        help="run folder: missing, empty or made by segcore (default: runs/segcore)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --output-dir with its own settings (see below)"
    )
    p.add_argument("--overwrite", action="store_true", help="start a new run in a folder that is not empty (see below)")
    p.add_argument("--eval-every", type=COUNT, help="validate every N iterations (0: at the end only)")
    p.add_argument("--checkpoint-every", type=COUNT, help="save the full state every N iterations (0: at the end)")
    p.add_argument(
        "--keep-checkpoints",
        type=COUNT,
        help="keep the newest N checkpoints, 0 keeps all (default 3); best/ and the final model always stay",
    )
    p.add_argument("--seed", type=SEED, help="seed of init, data order and augmentation (default 0)")
    p.add_argument("--grad-accum", type=POSITIVE_INT, help="gradient accumulation steps (default 1)")
    p.add_argument("--clip-grad", type=Number(float, low=0, low_open=True), help="clip the gradient norm to this value")
    p.add_argument(
        "--ema",
        type=Number(float, low=0, high=1, low_open=True, high_open=True),
        dest="ema_decay",
        help="keep an EMA of the weights with this decay",
    )
    p.add_argument(
        "--log-with",
        type=NameList(),
        help="Accelerate trackers, comma-separated: tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive, ... "
        "(the settings, loss, lr, throughput, every validation score per class, confusion matrix and prediction "
        "images; local files under OUTPUT_DIR/logs)",
    )
    p.add_argument("--tensorboard", action="store_true", help="the same as --log-with tensorboard")
    p.add_argument(
        "--tracker-project",
        type=SingleName(),
        help="the trackers' project name, a single name: TensorBoard writes to OUTPUT_DIR/logs/NAME (default segcore)",
    )
    p.add_argument(
        "--run-name",
        type=SingleName(),
        help="the run's name in the trackers, a single name (default: the output folder's name)",
    )
    p.add_argument("--log-every", type=POSITIVE_INT, help="metrics.jsonl row every N iterations (default 10)")
    p.add_argument("--eval-mode", choices=("whole", "slide"), help="override the recipe's eval mode")
    p.add_argument("--max-eval-samples", type=POSITIVE_INT, help="validate on the first N images only")
    p.add_argument("--workers", type=COUNT, help="data loading processes (default: 0 on CPU, up to 8 on a GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the fully resolved run (model options, parameter groups, schedule, pipelines, eval protocol, "
        "batch split) and exit: no data is read, no weights are created, nothing is written",
    )
    p.add_argument("--json", action="store_true", help="print JSON (the final metrics, or the --dry-run plan)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train and print where the results are."""
    import dataclasses
    import json
    import os

    from segcore.train import TrainSettings, component_names, train

    settings = TrainSettings(
        encoder=args.encoder,
        decoder=args.decoder,
        dataset=args.dataset,
        data_root=args.data_root,
        recipe=args.recipe,
        iters=args.iters,
        batch_size=args.batch_size,
        crop_size=args.crop_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        pretrained_encoder=args.pretrained_encoder,
        mixed_precision=args.mixed_precision,
        output_dir=args.output_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        seed=args.seed,
        grad_accum=args.grad_accum,
        clip_grad=args.clip_grad,
        ema_decay=args.ema_decay,
        tensorboard=args.tensorboard,
        log_with=args.log_with,
        tracker_project=args.tracker_project,
        run_name=args.run_name,
        log_every=args.log_every,
        eval_mode=args.eval_mode,
        max_eval_samples=args.max_eval_samples,
        workers=args.workers,
        progress=not args.no_progress,
        init_from=args.init_from,
    )
    # The --*-opt values are typed after the components the run will use (on --resume: the run's own; with
    # --init-from: M's), which the settings without them already decide.
    encoder, decoder = component_names(settings)
    settings = dataclasses.replace(
        settings,
        encoder_opt=parse_component_options("encoders", encoder, args.encoder_opt),
        decoder_opt=parse_component_options("decoders", decoder, args.decoder_opt),
        dataset_opt=parse_component_options("datasets", args.dataset, args.dataset_opt),
    )
    if args.dry_run:
        from segcore.train import plan

        resolved_plan = plan(settings)
        print(json.dumps(resolved_plan, indent=2) if args.json else format_plan(resolved_plan))
        return 0
    out = train(settings)
    if os.environ.get("RANK", "0") != "0":  # under `accelerate launch`, only the main process reports
        return 0
    last = None
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if "mIoU" in row:
                last = row
    if args.json:
        print(
            json.dumps(
                {"output_dir": str(out), **({k: last[k] for k in ("iter", "mIoU", "mAcc", "aAcc")} if last else {})}
            )
        )
    else:
        if last:
            print(f"final validation: mIoU {last['mIoU']:.2f}  mAcc {last['mAcc']:.2f}  aAcc {last['aAcc']:.2f}")
        print(f"model: {out}   curves: {out / 'curves.png'}   best: {out / 'best'}")
    return 0


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
    return "\n".join(lines)

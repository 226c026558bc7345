"""``segcore hub``: publish models (``push``) and mirror registered official checkpoints (``mirror``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``hub`` parser with its ``push`` and ``mirror`` actions."""
    p = sub.add_parser(
        "hub",
        help="push models to the Hugging Face Hub, mirror official checkpoints",
        description="Publish segcore models on the Hugging Face Hub (safetensors + model card).",
    )
    actions = p.add_subparsers(dest="hub_action", metavar="ACTION", required=True)
    push = actions.add_parser(
        "push",
        help="upload a model folder",
        description="Upload a model (anything from_pretrained takes) as a from_pretrained folder with its model "
        "card. The source is not modified.",
    )
    push.add_argument("model", help="folder, Hub repo or checkpoint name to upload")
    push.add_argument("--repo", required=True, help="target repo id (org/name)")
    _add_push_options(push)
    push.set_defaults(run=run_push)
    mirror = actions.add_parser(
        "mirror",
        help="convert a registered official checkpoint and push it",
        description="Download (or take with --file) the official file of a registered checkpoint, verify it, "
        "convert it with its plugin's converter and push it with a model card stating source, converter, "
        "expected metric and eval protocol.",
    )
    mirror.add_argument("name", help="registered checkpoint name (segcore list --kind checkpoints)")
    mirror.add_argument("--repo", required=True, help="target repo id (org/name)")
    mirror.add_argument("--file", type=Path, help="the official file, already downloaded")
    _add_push_options(mirror)
    mirror.set_defaults(run=run_mirror)


def _add_push_options(p: argparse.ArgumentParser) -> None:
    """What ``push_to_hub`` takes: visibility, branch, commit message, token, pull request."""
    p.add_argument("--private", action="store_true", help="create the repo private (an existing one keeps its own)")
    p.add_argument("--revision", "--branch", dest="revision", help="branch to push to (created if missing)")
    p.add_argument("--commit-message", help="the commit's title")
    p.add_argument("--commit-description", help="the commit's (or pull request's) description")
    p.add_argument("--token", help="Hub token (default: the logged-in one, or HF_TOKEN)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")


def _push_kwargs(args: argparse.Namespace, default_message: str) -> dict:
    return {
        "private": args.private,
        "commit_message": args.commit_message or default_message,
        "commit_description": args.commit_description,
        "token": args.token,
        "revision": args.revision,
        "create_pr": args.create_pr,
    }


def run_push(args: argparse.Namespace) -> int:
    """Upload a model."""
    import segcore

    model = segcore.SegModel.from_pretrained(args.model, token=args.token)
    print(model.push_to_hub(args.repo, **_push_kwargs(args, "Upload segcore model")))
    return 0


def run_mirror(args: argparse.Namespace) -> int:
    """Convert a registered official checkpoint and push it."""
    import segcore
    from segcore.plugins.registry import components

    spec = components("checkpoints").get(args.name)
    if spec is None:
        raise segcore.SegcoreError(f"no registered checkpoint {args.name!r}; see `segcore list --kind checkpoints`")
    if spec.kind != "model":
        raise segcore.SegcoreError(f"{args.name!r} is an encoder checkpoint; mirror full models only")
    from segcore.weights.checkpoints import convert_registered

    model = convert_registered(segcore.SegModel, args.name, spec, args.file)
    message = f"Mirror {args.name} from {spec.official_filename or 'official file'}"
    print(model.push_to_hub(args.repo, **_push_kwargs(args, message)))
    return 0

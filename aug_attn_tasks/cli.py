"""The ``aug-attn`` command.

``aug-attn train CONFIG [--name NAME] [--section.key VALUE ...] [--resume CKPT]``: train, keep the
best checkpoint by the config's validation metric, test it, print the metrics; the run goes to
``<output.dir>/NAME/version_N`` (default NAME: the config's ``name``, else its file name).
``aug-attn test CHECKPOINT [--section.key VALUE ...] [--perturb KIND [--strengths S,...]]``: evaluate a
checkpoint (``--perturb``: the task's robustness tests over a grid of strengths, :mod:`aug_attn_tasks.robustness`).
``aug-attn export CHECKPOINT OUT [--format pt2|onnx] [--batch-size B]``: export the model for deployment.
``aug-attn configs [--names]``: list the shipped configs, one line each (task, model, the time and
first sentence of the YAML's header comment), or their names only.
``aug-attn tag|classify PATH [PATH ...] --checkpoint CKPT``: batch inference (:mod:`aug_attn_tasks.batch`).
``aug-attn explain INPUT --checkpoint CKPT --out FILE.png``: what a model attends to (:mod:`aug_attn_tasks.explain`).
``aug-attn plot RUN_DIR [--out DIR]``: training curves and test pictures of a run (:mod:`aug_attn_tasks.plot`).
Other task commands (``prepare-audio``) are added by the ``cli`` modules of their task packages
(:mod:`aug_attn_tasks.registry`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from aug_attn.optional import MissingExtraError
from aug_attn_tasks.config import ConfigError, available_configs, configs_table, describe_config, load_config
from aug_attn_tasks.registry import task_modules

__all__ = ["main", "build_parser"]

# Modules that add subcommands through ``add_commands(subparsers)``; the tasks' own follow them.
COMMAND_MODULES: list[str] = ["aug_attn_tasks.batch", "aug_attn_tasks.explain", "aug_attn_tasks.plot"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aug-attn", description="Attention-augmented convolution: train and use models.")
    sub = parser.add_subparsers(dest="command", required=True)
    overrides = (
        "Any value of the config can be changed on the command line: --section.key VALUE, e.g. "
        "--trainer.max_epochs 3 --data.root DIR --model.dropout 0.2 (values are read as YAML: "
        "--model.channels '[32, 64]'). An unknown key is an error naming the closest known one."
    )
    train = sub.add_parser(
        "train", help="train a model from a config, then test the best checkpoint", description=overrides + " See `aug-attn configs`."
    )
    train.add_argument("config", help="shipped config name (see `aug-attn configs`) or path to a YAML file")
    train.add_argument(
        "--name",
        help="name of the run: it goes to <output.dir>/NAME/version_N (output.dir defaults to runs) instead of the "
        "folder named after the config (its name key, else its file name); one folder name, without '/' or '\\'",
    )
    train.add_argument("--resume", metavar="CKPT", help="resume training from this checkpoint (e.g. .../last.ckpt)")
    test = sub.add_parser("test", help="evaluate a checkpoint written by `aug-attn train`", description=overrides)
    test.add_argument("checkpoint")
    kinds = "; ".join(f"{task}: {', '.join(tests.PERTURBATIONS)}" for task, tests in task_modules("robustness").items())
    test.add_argument(
        "--perturb",
        metavar="KIND",
        help=f"test again with every input perturbed by KIND, over a grid of strengths ({kinds})",
    )
    test.add_argument("--strengths", help="comma-separated strengths for --perturb (default: its grid)")
    export = sub.add_parser("export", help="export a checkpoint's model with torch.export (.pt2) or to ONNX")
    export.add_argument("checkpoint")
    export.add_argument("out", help="output file, e.g. model.pt2 or model.onnx")
    export.add_argument("--format", choices=["pt2", "onnx"], help="default: from OUT's suffix, else pt2")
    export.add_argument("--batch-size", type=int, default=2, help="batch size of the example inputs traced")
    configs = sub.add_parser(
        "configs",
        help="list the shipped configs",
        description="One line per shipped config: its name, task, model (+attention when the model's attention is on), "
        "the running time its header comment states (as written there: CPU or wall clock, on the machine it names; "
        "'-' if it states none) and the header's first sentence. Train one with `aug-attn train NAME`.",
    )
    configs.add_argument("--names", action="store_true", help="print the names only, one per line")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    for commands in task_modules("cli").values():
        commands.add_commands(sub)
    return parser


def release_process_group() -> None:
    """Destroy the process group a DDP run created, once the command has finished on every rank.

    A gloo/NCCL group left to the interpreter's shutdown can abort the process ("terminate called
    without an active exception", exit -6) after all the work is done. Called only after success:
    destroying the group while another rank is still inside a collective would hang instead.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    if overrides and args.command not in ("train", "test"):
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    if args.command == "test" and args.strengths and not args.perturb:
        parser.error("--strengths goes with --perturb")
    try:
        if args.command == "configs":
            names = available_configs()
            print("\n".join(names) if args.names else configs_table(describe_config(name) for name in names))
            return 0
        if args.command == "train":
            from aug_attn_tasks.train import fit

            fit(load_config(args.config, overrides, run_name=args.name), resume=args.resume)
            release_process_group()
            return 0
        if args.command == "test":
            if args.perturb:
                from aug_attn_tasks.robustness import robustness

                strengths = [float(v) for v in args.strengths.split(",")] if args.strengths else None
                robustness(args.checkpoint, args.perturb, strengths, overrides)
            else:
                from aug_attn_tasks.train import evaluate

                evaluate(args.checkpoint, overrides)
            release_process_group()
            return 0
        if args.command == "export":
            from aug_attn_tasks.export import export_checkpoint

            fmt = args.format or ("onnx" if args.out.endswith(".onnx") else "pt2")
            error = export_checkpoint(args.checkpoint, args.out, fmt, args.batch_size)
            print(f"exported {args.out} ({fmt}); largest difference from the checkpoint's module: {error:.3g}")
            return 0
        return int(args.handler(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError, MissingExtraError) as error:
        print(f"aug-attn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The `tvts` command: params checks and stage entry points (what dvc.yaml calls)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from tvts import paths
from tvts.config import ParamsError, launched_world, load_params
from tvts.errors import MissingInput, UserError
from tvts.storage import sweep_leftovers
from tvts.train.launch import launch, processes_per_node, should_launch

STAGES = tuple(paths.STAGES)


def _params_cmd(args: argparse.Namespace) -> int:
    params = load_params(args.file, args.world_size)
    if args.action == "show":
        print(yaml.safe_dump(params.to_dict(), sort_keys=False), end="")
    else:
        world = (args.world_size or launched_world()
                 or processes_per_node(params.launch) * params.launch.nnodes)
        print(f"{args.file}: ok (profile {params.profile}, {world} training process(es))")
    return 0



def parse_part(text: str) -> tuple[int, int]:
    """`i/n` (0 <= i < n) -> (i, n)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shards {text!r}: expected i/n, e.g. 0/4 (part i of n, from 0)"
                        ) from None
    if not 0 <= i < n:
        raise UserError(f"--shards {text!r}: needs 0 <= i < n")
    return i, n


def producer_of(path: str | Path) -> str | None:
    """The stage whose outputs hold `path` (absolute, or relative to the working directory:
    DVC runs a stage in the project root)."""
    return paths.producer_of(os.path.relpath(Path(path).absolute(), Path.cwd()))


def _missing_input_message(path: str, what: str) -> str:
    stage = producer_of(path)
    if stage is None:
        return f"{path} ({what}) does not exist"
    return (f"{path} ({what}) does not exist: the `{stage}` stage makes it. Run `dvc repro "
            f"{stage}` (it runs the stages before it when needed), then this stage again.")


def _stage_cmd(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    module = importlib.import_module(f"tvts.stages.{args.name}")
    if args.shards is not None and args.name not in paths.SHARDED_STAGES:
        raise UserError(f"--shards: stage {args.name} has no per-shard mode; stages that "
                        f"have: {', '.join(paths.SHARDED_STAGES)}")
    kwargs: dict[str, Any] = {} if args.shards is None else {"shards": parse_part(args.shards)}
    if args.verify:
        if args.name != "pack":
            raise UserError("--verify: only the pack stage checks what it keeps")
        kwargs["verify"] = True
    # temporary files of this stage's writes that a kill left (a part writing beside this
    # run keeps its own: their writers still run)
    left = sweep_leftovers(list(paths.STAGES[args.name].outputs))
    if left:
        print(f"{args.name}: removed {len(left)} temporary file(s) of killed writes "
              f"(e.g. {left[0]})", file=sys.stderr)
    try:
        if should_launch(args.name, params.launch):  # several processes: each runs the stage
            print(launch(args.name, args.params, params.launch, kwargs))
            return 0
        print(module.run(params, **kwargs))
    except MissingInput as e:
        raise UserError(_missing_input_message(e.path, e.what)) from None
    except FileNotFoundError as e:
        # an input of another stage's making, read without the tables' check
        if e.filename is None or producer_of(e.filename) is None:
            raise
        raise UserError(_missing_input_message(str(e.filename), "an input")) from None
    return 0


def _reencode_cmd(args: argparse.Namespace) -> int:
    from tvts.config import CorpusConfig
    from tvts.video.reencode import reencode_dir

    done = reencode_dir(args.src, args.dst, CorpusConfig().extensions, args.short_side, args.gop)
    print(f"re-encoded {len(done)} videos into {args.dst} (short side {args.short_side}, "
          f"keyframe every {args.gop} frames)")
    return 0


def _reports_cmd(args: argparse.Namespace) -> int:
    from tvts.reports.plots import install_plots_template

    dvc_dir = Path(args.dvc_dir)
    if not dvc_dir.is_dir():
        raise UserError(f"{dvc_dir}: not a DVC folder; run this in the project's root (the "
                        "folder with dvc.yaml) or pass --dvc-dir")
    path = install_plots_template(dvc_dir)
    print(f"wrote {path}: `dvc plots show` pages now carry the Vega libraries (no CDN)")
    return 0


def _ablate_cmd(args: argparse.Namespace) -> int:
    from tvts.experiments.ablation import run_grid

    done = run_grid(args.grid, Path(args.root), args.jobs, args.summary_only)
    print(f"{len(done.ran)} cell(s) run, {len(done.skipped)} already done, in "
          f"{done.wall_s:.0f} s; table: {done.summary} (and index.md beside it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("params", help="validate or print the resolved params")
    p.add_argument("action", choices=("check", "show"))
    p.add_argument("--file", default="params.yaml")
    p.add_argument("--world-size", type=int, default=None, metavar="N",
                   help="check the batch sizes for N training processes (default: WORLD_SIZE, "
                        "else what params' launch section asks for)")
    p.set_defaults(func=_params_cmd)
    s = sub.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    s.add_argument("name", choices=STAGES)
    s.add_argument("--params", default="params.yaml")
    s.add_argument("--shards", metavar="I/N", default=None,
                   help="asr, dedup, evaluate: only part I of N of the per-video work "
                        "(shards s with s %% N == I), kept for the whole stage to merge")
    s.add_argument("--verify", action="store_true",
                   help="pack: check every JPEG of the shards it keeps against its CRC "
                        "(reads them all) and rewrite a damaged one; without it, the frame "
                        "tables are checked and shards a reader reported are rewritten")
    s.set_defaults(func=_stage_cmd)
    o = sub.add_parser("reports", help="set up offline report pages (the committed template "
                       "again, after the vl-convert pin changes)")
    o.add_argument("action", choices=("setup",),
                   help="setup: write the `dvc plots show` page template that inlines the "
                        "Vega libraries (.dvc/config's plots.html_template)")
    o.add_argument("--dvc-dir", default=".dvc")
    o.set_defaults(func=_reports_cmd)
    a = sub.add_parser("ablate", help="run an ablation grid (variants x seeds, each cell a DVC "
                       "experiment; done cells are not rerun) and write its table")
    a.add_argument("grid", help="a grid file, e.g. ablations/objectives.yaml")
    a.add_argument("--jobs", type=int, default=1,
                   help="cells at once, each in its own worktree (default 1: on a machine "
                        "with room for several trainings, more)")
    a.add_argument("--summary-only", action="store_true",
                   help="run nothing: the table from the cells done so far")
    a.add_argument("--root", default=".", help="the project (default: here)")
    a.set_defaults(func=_ablate_cmd)
    r = sub.add_parser("reencode", help="re-encode a directory of videos for fast seeking")
    r.add_argument("src")
    r.add_argument("dst")
    r.add_argument("--short-side", type=int, default=256)
    r.add_argument("--gop", type=int, default=16, help="keyframe interval in frames")
    r.set_defaults(func=_reencode_cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ParamsError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

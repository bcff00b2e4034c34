"""`python -m flows serve`: serve the `tvts` flow as the deployment `tvts/full-pipeline`.

Runs execute in this process's machine and project folder; `--limit` (default 1) caps the
deployment's concurrent runs, so two runs never interleave DVC's lock and outputs on one
workspace. Set PREFECT_API_URL to use a running server (local, remote or Prefect Cloud).
"""

from __future__ import annotations

import argparse

from flows.pipeline import tvts

DEPLOYMENT = "full-pipeline"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the tvts/full-pipeline deployment")
    s.add_argument("--limit", type=int, default=1, help="concurrent runs of the deployment")
    s.add_argument("--cron", default=None, help="a schedule, e.g. '0 3 * * *' (none by default)")
    args = ap.parse_args(argv)
    tvts.serve(name=DEPLOYMENT, global_limit=args.limit, cron=args.cron,
               description="The tvts pipeline: every DVC stage in order, DVC's cache deciding "
                           "what runs; overrides run as a DVC experiment.")


if __name__ == "__main__":
    main()

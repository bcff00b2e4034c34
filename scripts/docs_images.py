"""Regenerates the README's pictures and results table from a finished demo run: a screenshot
of reports/index.html (headless Chromium, network blocked: the page is offline), the
pretraining curves PNG, and (printed) the headline table from metrics/details/eval.json. Run
in the project after `dvc repro`:

    python scripts/docs_images.py [--workspace .] [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--no-first-run", "--hide-scrollbars",
         "--allow-file-access-from-files", "--host-resolver-rules=MAP * ~NOTFOUND"]


def _fig(by_encoder: dict, encoder: str, key: str, scale: float = 1.0) -> str:
    value = by_encoder.get(encoder, {}).get(key)
    return "" if value is None else f"{value * scale:.1f}"


def results_table(details: dict) -> str:
    """The demo's headline figures, trained encoder against the random-weights floor."""
    rows = ["| figure | TVTS pretrain | random weights | chance |", "|---|---|---|---|"]
    sort = details.get("transcripts", {})
    acc, text = sort.get("sort", {}), sort.get("text_only_sorter", {})
    split = sort.get("test_split", "?")
    mine, floor = "pretrain", "random"
    rows += [
        f"| transcript sorting, {split} videos: own video (%) "
        f"| {_fig(acc, mine, 'acc_video', 100)} | {_fig(acc, floor, 'acc_video', 100)} | 25.0 |",
        f"| the same, another clip's video (%) | {_fig(acc, mine, 'acc_other_video', 100)}"
        " | | 25.0 |",
        f"| a sorter trained on the text alone (%) | {_fig(text, mine, 'acc', 100)} | | 25.0 |"]
    ssv2 = details.get("ssv2", {})
    for protocol, key, label in (("linear", "top1", "linear probe top-1"),
                                 ("attentive", "top1", "attentive probe top-1"),
                                 ("v2v", "R@1", "video-to-video R@1"),
                                 ("finetune", "top1", "fine-tuned top-1")):
        by = ssv2.get(protocol, {})
        chance = by.get("random", {}).get("chance_top1" if key == "top1" else "chance_r1")
        rows.append(f"| SSV2-format motion set ({ssv2.get('test_split', '?')} clips): {label} "
                    f"| {_fig(by, 'pretrain', key)} | {_fig(by, 'random', key)} | "
                    f"{'' if chance is None else f'{chance:.1f}'} |")
    t2v = details.get("msrvtt", {}).get("t2v", {})
    rows.append(f"| MSR-VTT-format text-to-video R@1 (post_pretrain) | "
                f"{_fig(t2v, 'post_pretrain', 'R@1')} | {_fig(t2v, 'random', 'R@1')} | |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=".", help="the project folder of a finished run")
    ap.add_argument("--out", default="docs/images")
    ap.add_argument("--size", default="1280,1000", help="screenshot width,height in pixels")
    args = ap.parse_args()
    ws, out = Path(args.workspace), Path(args.out)
    index, curves = ws / "reports/index.html", ws / "reports/pretrain/curves.png"
    missing = [str(p) for p in (index, curves) if not p.exists()]
    if missing:
        print(f"error: {', '.join(missing)} not found: run `dvc repro` in {ws} first",
              file=sys.stderr)
        return 2
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(b)), None)
    if browser is None:
        print("error: no Chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "reports-index.png"
    subprocess.run([browser, *FLAGS, f"--screenshot={shot.resolve()}",
                    f"--window-size={args.size}", "--virtual-time-budget=8000",
                    index.resolve().as_uri()], check=True, capture_output=True, timeout=180)
    shutil.copyfile(curves, out / "pretrain-curves.png")
    print(f"wrote {shot} and {out / 'pretrain-curves.png'}")
    details = ws / "metrics/details/eval.json"
    if details.exists():
        print(results_table(json.loads(details.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

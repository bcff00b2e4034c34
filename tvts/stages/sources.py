"""`sources` stage: cheap listings of corpus.source and the directory downstream sets ->
data/sources/{corpus,downstream}.json. DVC runs it on every `dvc repro` (always_changed);
the corpus and downstream stages depend on its files, so they rerun exactly when what they
read changed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tvts import paths
from tvts.config import Params
from tvts.corpus.listing import corpus_listing, downstream_listing
from tvts.storage import atomic_write_text

OUT_DIR = paths.SOURCES


def _write(path: Path, listing: dict) -> None:
    text = json.dumps(listing, indent=1, sort_keys=True) + "\n"
    # rewritten only on change: an unchanged listing keeps its file untouched
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)


def run(params: Params, out_dir: Path = OUT_DIR) -> str:
    t0 = time.perf_counter()
    corpus = corpus_listing(params.corpus)
    downstream = downstream_listing(params.downstream, params.svo_source())
    _write(out_dir / "corpus.json", corpus)
    _write(out_dir / "downstream.json", downstream)
    shown = (f"{corpus['files']} files, {corpus['bytes'] / 1e9:.2f} GB"
             if "files" in corpus else corpus.get("source", ""))
    return (f"sources: corpus {shown}; {len(downstream)} downstream set(s) listed; "
            f"{time.perf_counter() - t0:.1f} s")

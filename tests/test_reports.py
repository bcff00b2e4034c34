"""Report pages that work with no network: Data Docs with local assets, the `dvc plots show`
template, PNG figures, the reports index, the headline metrics."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from tvts.config import resolve
from tvts.eval.summary import headline_metrics
from tvts.quality.asr_checks import run_checks
from tvts.reports.datadocs import RemoteAsset, make_offline, rewrite_page
from tvts.reports.index import Report, StageSection, write_index
from tvts.reports.plots import (
    confusion_spec,
    install_plots_template,
    pretrain_panels,
    write_curves,
    write_png,
)

from .browser import dump_dom, ink, remote_references, screenshot

BOOTSTRAP_GREY = (108, 117, 125)  # Bootstrap 4's `btn-secondary` (the Clear Filters buttons)


@pytest.fixture(scope="module")
def gx_docs(tmp_path_factory) -> tuple[Path, Path]:
    """Data Docs of two small validations, as great-expectations writes them and offline."""
    root = tmp_path_factory.mktemp("gx")
    params = resolve({})
    videos = pl.DataFrame({"video_id": ["clean_video", "empty_word_video"],
                           "uri": ["a.mp4", "b.mp4"],
                           "duration_s": [16.0, 16.0], "fps": [25.0, 25.0], "width": [64, 64],
                           "height": [64, 64], "has_audio": [True, True],
                           "source": ["t", "t"], "split": ["train", "train"]})
    words = pl.DataFrame([{"video_id": v, "idx": i,
                           "word": "" if (v, i) == ("empty_word_video", 3) else "w",
                           "start_s": i * 0.4, "end_s": i * 0.4 + 0.3, "confidence": 0.9}
                          for v in videos["video_id"] for i in range(40)])
    run_checks(words, videos, params.validate_, params.data, root / "online")
    shutil.copytree(root / "online", root / "offline")
    make_offline(root / "offline")
    return root / "online", root / "offline"


def _pages(docs: Path) -> list[Path]:
    return sorted(docs.rglob("*.html"))


@pytest.mark.slow
def test_data_docs_reference_nothing_remote(gx_docs):
    online, offline = gx_docs
    assert all(remote_references(p.read_text()) for p in _pages(online))  # GX's own pages do
    pages = _pages(offline)
    assert len(pages) == 5  # index, 2 suites, 2 validation results
    for page in [*pages, *(offline / "static" / "styles").glob("*.css")]:
        assert remote_references(page.read_text()) == [], page


@pytest.mark.slow
def test_data_docs_index_renders_offline(gx_docs, tmp_path):
    online, offline = gx_docs
    dom = dump_dom(offline / "index.html")
    # bootstrap-table built the validation results table from the page's data: two runs
    assert dom.count('data-index="') >= 2
    assert "asr_words" in dom and "asr_videos" in dom
    img = screenshot(offline / "index.html", tmp_path / "index.png")
    grey = (np.abs(img - BOOTSTRAP_GREY).sum(axis=2) < 6).sum()
    assert grey > 1000 and ink(img) > 0.02  # Bootstrap's styles applied; not blank
    # the same page as GX writes it, with the network blocked: no table, no styles
    bare = dump_dom(online / "index.html")
    assert 'data-index="' not in bare
    bare_img = screenshot(online / "index.html", tmp_path / "bare.png")
    assert (np.abs(bare_img - BOOTSTRAP_GREY).sum(axis=2) < 6).sum() < 50


def test_a_validation_result_renders_offline(gx_docs, tmp_path):
    _, offline = gx_docs
    page = next(p for p in _pages(offline) if "validations" in p.parts
                and "asr_words" in p.name)
    dom = dump_dom(page)
    # the per-expectation table: one row per expectation of the words suite, the failing one
    # with its unexpected value
    assert dom.count("<tr") >= 7
    assert "word" in dom and "start_s" in dom and "Unexpected" in dom
    # the failing video is named on the page, the passing one is not
    assert "empty_word_video" in dom and "clean_video" not in dom
    img = screenshot(page, tmp_path / "validation.png")
    assert ink(img) > 0.02
    # Font Awesome's icons come from the local webfonts: the status icons have a width
    assert (offline / "static/vendor/fontawesome/webfonts/fa-solid-900.woff2").stat().st_size


def test_an_unknown_remote_asset_is_an_error(tmp_path):
    html = '<html><head><script src="https://cdn.example.org/new-lib@2.js"></script></head></html>'
    with pytest.raises(RemoteAsset, match=r"new-lib@2\.js"):
        rewrite_page(html, tmp_path, tmp_path / "vendor", tmp_path)
    # a known one is rewritten to a path relative to the page, its integrity check dropped
    known = ('<script src="https://code.jquery.com/jquery-3.7.1.min.js" integrity="sha384-x" '
             'crossorigin="anonymous"></script>')
    out = rewrite_page(known, tmp_path / "a" / "b", tmp_path / "static/vendor", tmp_path)
    assert out == '<script src="../../static/vendor/jquery/jquery.min.js"></script>'


def _dvc_page(out: Path, template: Path | None) -> Path:
    """What `dvc plots show [--html-template]` writes for one plot (DVC's own renderer)."""
    from dvc_render import VegaRenderer, render_html

    rows = [{"step": i, "loss": 2.0 / (i + 1)} for i in range(20)]
    renderer = VegaRenderer(rows, "train/loss", x="step", y="loss")
    render_html([renderer], out, html_template=template)
    return out


@pytest.mark.slow
def test_dvc_plots_template_renders_offline(tmp_path):
    template = install_plots_template(tmp_path / ".dvc")
    text = template.read_text()
    assert "{plot_divs}" in text and "{scripts}" not in text
    assert remote_references(text) == []
    page = _dvc_page(tmp_path / "plots.html", template)
    assert remote_references(page.read_text()) == []
    dom = dump_dom(page)
    assert '<svg' in dom and 'class="marks"' in dom  # Vega drew the chart
    assert ink(screenshot(page, tmp_path / "plots.png")) > 0.003  # one small chart
    # DVC's own page loads Vega from a CDN: offline, nothing is drawn
    default = _dvc_page(tmp_path / "default.html", None)
    assert remote_references(default.read_text())
    assert 'class="marks"' not in dump_dom(default)
    assert ink(screenshot(default, tmp_path / "default.png")) < 0.001


def _live(tmp_path: Path) -> Path:
    live = tmp_path / "live"
    for name, values in {"train/loss": [3.0, 2.5, 2.0, 1.8], "train/lr": [1e-4] * 4,
                         "val/sort_acc": [0.3, 0.6], "train/clips_per_s": [10, 12, 11, 12]
                         }.items():
        tsv = live / "plots" / "metrics" / f"{name}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        step = 2 if name.startswith("val/") else 1
        tsv.write_text("step\t" + name.split("/")[1] + "\n" + "".join(
            f"{i * step + step - 1}\t{v}\n" for i, v in enumerate(values)))
    return live


def test_training_curves_png(tmp_path):
    out = write_curves(_live(tmp_path), pretrain_panels(0.25), "pretrain",
                       tmp_path / "r" / "curves.png")
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape[0] > 300 and img.shape[1] > 600 and ink(img) > 0.02
    assert write_curves(tmp_path / "nothing", pretrain_panels(0.25), "x",
                        tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_confusion_png_counts(tmp_path):
    rows = [{"actual": "a", "predicted": "a"}] * 3 + [{"actual": "b", "predicted": "a"}]
    spec = confusion_spec(rows, "t")
    assert spec["encoding"]["x"]["sort"] == ["a", "b"]
    img = np.asarray(Image.open(write_png(spec, tmp_path / "c.png")).convert("RGB"))
    assert ink(img.astype(int)) > 0.02


def test_index_page_escapes_and_links(tmp_path):
    (tmp_path / "reports" / "leakage").mkdir(parents=True)
    (tmp_path / "reports" / "leakage" / "index.html").write_text("<html></html>")
    curves = write_curves(_live(tmp_path), pretrain_panels(0.25), "pretrain",
                          tmp_path / "reports" / "pretrain" / "curves.png")
    sections = [
        StageSection("dedup", {"videos": 3, "<b>bold</b>": 0.5},
                     [Report("leakage review", tmp_path / "reports/leakage/index.html")]),
        StageSection("pretrain", {"val_sort_acc": 0.85},
                     [Report("pretraining curves", curves, image=True)]),
        StageSection("evaluate", {}, [Report("summary", tmp_path / "reports/eval/summary.md")]),
    ]
    page = write_index(tmp_path / "reports" / "index.html", sections, "run <1>")
    html = page.read_text()
    assert "<b>bold" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert 'href="leakage/index.html"' in html and 'src="pretrain/curves.png"' in html
    assert "not made by this run" in html and "has not run" in html
    assert remote_references(html) == []
    dom = dump_dom(page)
    assert "<b>bold" not in dom and "0.85" in dom
    img = screenshot(page, tmp_path / "index.png", size="1200,1400")
    assert ink(img) > 0.03  # the curves figure is drawn


def test_headline_metrics_keep_trained_encoders_main_figures():
    full = {"ssv2": {"linear": {e: {"top1": t, "top5": 90.0} for e, t in
                                (("pretrain", 20.0), ("post_pretrain", 18.0), ("random", 27.0))},
                     "test_split": "val"},
            "msrvtt": {"t2v": {"pretrain": {"R@1": 26.7, "MedR": 3.0}},
                       "t2v_finetune": {"pretrain": {"R@1": 30.0}, "post_pretrain": {"R@1": 31.0},
                                        "random": {"R@1": 9.0}}},
            "transcripts": {"sort": {"pretrain": {"acc_video": 0.85, "acc_other_video": 0.3}},
                            "text_only_sorter": {"pretrain": {"acc": 0.25}}},
            "timing": {"total_s": 75.0}}
    # the encoder the paper reports a protocol of, where it was evaluated; else each trained
    # one; a probe's gain over the random floor of the same run, sorting's controls beside it
    assert headline_metrics(full) == {
        "ssv2": {"linear_top1": {"pretrain": 20.0, "gain_over_random": -7.0}},
        "msrvtt": {"t2v_R1": {"pretrain": 26.7}, "t2v_finetune_R1": {"post_pretrain": 31.0}},
        "transcripts": {"sort_acc_video": {"pretrain": 0.85, "text_only_control": 0.25}}}
    del full["ssv2"]["linear"]["pretrain"]
    assert headline_metrics(full)["ssv2"] == {"linear_top1": {"post_pretrain": 18.0,
                                                             "gain_over_random": -9.0}}
    # the gain moves with the trained encoder: random weights in its place gain nothing
    full["ssv2"]["linear"]["post_pretrain"] = full["ssv2"]["linear"]["random"]
    assert headline_metrics(full)["ssv2"]["linear_top1"]["gain_over_random"] == 0.0
    assert json.dumps(headline_metrics(full))  # plain JSON


REPO = Path(__file__).resolve().parents[1]
# no double quotes: json.dumps would escape them and break the injected script on its own
HOSTILE_LABEL = ("</script><script>document.documentElement.setAttribute('data-pwned', 1)"
                 "</script><!--")


def _second_clone(tmp_path: Path) -> Path:
    """What a teammate's clone holds of the DVC setup: the tracked files only (no install
    script run), in a fresh git repository."""
    import subprocess

    clone = tmp_path / "clone"
    tracked = subprocess.run(["git", "ls-files", ".dvc", "dvc.yaml", "params.yaml"], cwd=REPO,
                             check=True, capture_output=True, text=True).stdout.split()
    for name in tracked:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, clone / name)
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
    return clone


def test_committed_plots_template_is_what_the_code_writes(tmp_path):
    committed = REPO / ".dvc" / "offline_plots.html"
    assert committed.read_text() == install_plots_template(tmp_path).read_text(), (
        "the committed .dvc/offline_plots.html is stale: run `python -m tvts reports setup` "
        "and commit it")


@pytest.mark.slow
def test_a_second_clones_plots_page_renders_and_keeps_a_hostile_label_as_data(tmp_path):
    """`dvc plots show` in a clone that never ran the install script draws the confusion
    matrix offline, and a class name that closes the script block stays text."""
    import subprocess

    from tvts.reports.plots import confusion_rows

    clone = _second_clone(tmp_path)
    rows = confusion_rows([HOSTILE_LABEL, "a", "a"], ["a", "a", HOSTILE_LABEL])
    confusion = clone / "reports" / "eval" / "confusion" / "s-pretrain.json"
    confusion.parent.mkdir(parents=True)
    confusion.write_text(json.dumps(rows))
    done = subprocess.run(["dvc", "plots", "show"], cwd=clone, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    page = clone / "dvc_plots" / "index.html"
    html = page.read_text()
    assert remote_references(html) == []
    assert "</script><script>document" not in html and "<!--" not in html
    dom = dump_dom(page)
    assert 'class="marks"' in dom  # Vega drew the matrix
    assert not re.search(r"<html[^>]*data-pwned", dom)  # the label is drawn, never run

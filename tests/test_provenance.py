"""The code that produced a cached result is part of its key (tvts.provenance): import
closures, code digests, and every persisted cache (features, fine-tuning, retrieval
fine-tuning, packed shards, dedup features) recomputing after a code change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tvts.provenance import ROOT, code_digest, import_closure, model_modules

from .conftest import micro


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture()
def scratch(tmp_path):
    return _write(tmp_path, {
        "tvts/__init__.py": "",
        "tvts/low.py": "X = 1\n",
        "tvts/mid/__init__.py": "",
        "tvts/mid/a.py": "from ..low import X\nfrom . import b\n",
        "tvts/mid/b.py": "def f():\n    from tvts.lazy import Y  # inside a function\n",
        "tvts/lazy.py": "import numpy\nY = 2\n",
        "tvts/unrelated.py": "Z = 3\n",
    })


def test_the_closure_follows_relative_absolute_and_function_level_imports(scratch):
    got = import_closure(["tvts.mid.a"], scratch)
    assert got == {"tvts", "tvts.mid", "tvts.mid.a", "tvts.mid.b", "tvts.low", "tvts.lazy"}
    with pytest.raises(ValueError, match="no module"):
        import_closure(["tvts.missing"], scratch)


def test_the_digest_moves_with_the_code_that_runs_and_only_with_it(scratch):
    before = code_digest("tvts.mid.a", root=scratch)
    (scratch / "tvts/unrelated.py").write_text("Z = 4\n")
    assert code_digest("tvts.mid.a", root=scratch) == before
    (scratch / "tvts/lazy.py").write_text("import numpy\nY = 3\n")
    changed = code_digest("tvts.mid.a", root=scratch)
    assert changed != before
    (scratch / "tvts/lazy.py").write_text("import numpy\nY = 2\n")
    assert code_digest("tvts.mid.a", root=scratch) == before  # reverted: the same key again


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("copy")
    shutil.copytree(ROOT / "tvts", root / "tvts",
                    ignore=shutil.ignore_patterns("__pycache__", "vendor"))
    return root


@pytest.mark.parametrize("entry, edited, moves", [
    ("tvts.eval.finetune", "tvts/models/classifier.py", True),  # the fine-tuning head
    ("tvts.eval.finetune", "tvts/data/augment.py", True),
    ("tvts.eval.finetune", "tvts/train/loop.py", True),
    ("tvts.eval.retrieval_finetune", "tvts/train/tasks.py", True),
    ("tvts.eval.features", "tvts/data/labelled.py", True),
    ("tvts.pack.shards", "tvts/video/decoders.py", True),
    ("tvts.dedup.extract", "tvts/dedup/borders.py", True),
    # an edit elsewhere keeps the key: retrieval does not run classification's head
    ("tvts.eval.retrieval_finetune", "tvts/models/classifier.py", False),
    ("tvts.eval.features", "tvts/eval/finetune.py", False),
    ("tvts.pack.shards", "tvts/asr/engines.py", False),
])
def test_a_one_line_edit_moves_the_key_of_the_code_that_runs_it(project_copy, entry, edited,
                                                                 moves):
    path = project_copy / edited
    original = path.read_text()
    before = code_digest(entry, root=project_copy)
    try:
        path.write_text(original + "\n# one more line\n")
        assert (code_digest(entry, root=project_copy) != before) == moves
    finally:
        path.write_text(original)
    assert code_digest(entry, root=project_copy) == before


def test_model_modules_name_the_classes_that_run():
    from tvts.models.classifier import VideoClassifier
    from tvts.models.video_vit import VideoViT, VideoViTConfig

    vit = VideoViT(VideoViTConfig(img_size=16, num_frames=2, patch_size=8, width=16, depth=1,
                                  heads=2))
    mods = model_modules(VideoClassifier(vit, 3, 0.0, 1.0))
    assert {"tvts.models.classifier", "tvts.models.video_vit"} <= mods
    assert all(m.startswith("tvts.") for m in mods)


# ---------------------------------------------------------------- each cache uses its key
def test_feature_shards_are_recomputed_under_other_code_or_another_batch(clips, tmp_path,
                                                                       monkeypatch):
    from tvts.eval import features as F

    from .test_eval import _encoder

    items = [F.ClipItem(f"c{i}", str(p)) for i, p in enumerate(clips)]
    spec = F.ViewSpec(4, 32, 36, "pyav")
    first = F.extract(items, [_encoder("a", 0)], spec, tmp_path, num_shards=2, batch_size=2,
                      workers=0)
    assert first.shards_reused == 0
    same = F.extract(items, [_encoder("a", 0)], spec, tmp_path, num_shards=2, batch_size=2,
                     workers=0)
    assert same.shards_reused == 2
    other_batch = F.extract(items, [_encoder("a", 0)], spec, tmp_path, num_shards=2,
                            batch_size=3, workers=0)
    assert other_batch.shards_reused == 0  # the batch can change the arithmetic
    monkeypatch.setattr(F, "code_digest", lambda *m: "edited")
    other_code = F.extract(items, [_encoder("a", 0)], spec, tmp_path, num_shards=2,
                           batch_size=3, workers=0)
    assert other_code.shards_reused == 0 and other_code.clips_decoded == len(items)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from .conftest import make_video

    root = tmp_path_factory.mktemp("clips")
    return [make_video(root / f"c{i}.mp4", seconds=2.0, fps=8, size=(48, 40), audio=False,
                       seed=i) for i in range(3)]


def test_packed_shards_are_rewritten_under_other_code(monkeypatch, tmp_path):
    import polars as pl

    from tvts.config import S3Config
    from tvts.pack import corpus_run

    p = micro()
    videos = pl.DataFrame({"video_id": ["v1", "v2"], "uri": ["a.mp4", "b.mp4"],
                           "width": [64, 64], "height": [48, 48]})
    settings = corpus_run.settings_for(p.pack, p.data.resize_short, p.data.decoder)

    def fingerprints():
        return [j.fingerprint for j in corpus_run.plan(videos, p.pack, settings, tmp_path,
                                                       S3Config(), str(tmp_path))]

    before = fingerprints()
    assert fingerprints() == before
    monkeypatch.setattr(corpus_run, "code_digest", lambda *m: "edited")
    assert all(a != b for a, b in zip(fingerprints(), before, strict=True))

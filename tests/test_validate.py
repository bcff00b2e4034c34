"""The validate stage: great-expectations suites catch planted bad rows, per video."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tvts.config import resolve
from tvts.data.windows import windows_possible
from tvts.errors import UserError
from tvts.stages import validate as validate_stage
from tvts.tables import frame, read_table, write_table

from .conftest import stage_record


def _video(vid: str, duration: float = 30.0) -> dict:
    return {"video_id": vid, "uri": f"/videos/{vid}.mp4", "duration_s": duration, "fps": 10.0,
            "width": 64, "height": 48, "has_audio": True, "source": "dir", "split": "train"}


def _speech(vid: str, duration: float = 30.0) -> list[dict]:
    """A plausible transcript: a word every 0.5 s across the video."""
    return [{"video_id": vid, "idx": i, "word": f"w{i}", "start_s": t, "end_s": t + 0.4,
             "confidence": 0.9} for i, t in enumerate(np.arange(0.2, duration - 0.5, 0.5))]


def _plant(rows: list[dict], idx: int, **changes) -> list[dict]:
    rows = [dict(r) for r in rows]
    rows[idx].update(changes)
    return rows


@pytest.fixture
def planted(tmp_path):
    videos = [_video(v) for v in ("good", "negative", "reversed", "beyond", "backwards",
                                  "emptyword", "badconf", "mute", "sparse")]
    words = (_speech("good")
             + _plant(_speech("negative"), 0, start_s=-0.3)
             + _plant(_speech("reversed"), 5, end_s=2.0)           # ends before it starts
             + _plant(_speech("beyond"), -1, end_s=31.5)           # 1.5 s past the end
             + _plant(_speech("backwards"), 10, start_s=1.0, end_s=1.2)  # start goes back
             + _plant(_speech("emptyword"), 3, word="")
             + _plant(_speech("badconf"), 4, confidence=1.7)
             + [{"video_id": "sparse", "idx": 0, "word": "hello", "start_s": 3.0,
                 "end_s": 3.4, "confidence": 0.8}])
    corpus, asr = tmp_path / "corpus", tmp_path / "asr"
    write_table(frame(videos, "videos"), corpus / "videos.parquet", "videos")
    write_table(frame(words, "words"), asr / "words.parquet", "words")
    write_table(frame([], "quarantine"), asr / "quarantine.parquet", "quarantine")
    return tmp_path


def _run(root, **validate):
    params = resolve({"validate": {"min_pass_rate": 0.0, **validate}})
    summary = validate_stage.run(params, root / "corpus", root / "asr", root / "report",
                                 root / "metrics.json")
    quarantine = read_table(root / "asr" / "validation_quarantine.parquet", "quarantine")
    return summary, dict(zip(quarantine["video_id"], quarantine["reason"], strict=True))


def test_each_planted_defect_is_caught_and_named(planted):
    summary, reasons = _run(planted)
    expected = {
        "negative": "expect_column_values_to_be_between(start_s)",
        "reversed": "expect_column_values_to_be_between(word_span_s)",
        "beyond": "expect_column_values_to_be_between(end_past_duration_s)",
        "backwards": "expect_column_values_to_be_between(start_step_s)",
        "emptyword": "expect_column_value_lengths_to_be_between(word)",
        "badconf": "expect_column_values_to_be_between(confidence)",
        "mute": "expect_column_values_to_be_between(words_per_minute)",
        "sparse": "expect_column_values_to_be_in_set(k_windows_possible)",
    }
    assert set(reasons) == set(expected)  # "good" passes
    for vid, name in expected.items():
        assert name in reasons[vid], (vid, reasons[vid])
    valid = read_table(planted / "asr" / "valid.parquet", "videos")
    assert valid["video_id"].to_list() == ["good"]
    metrics = stage_record(planted / "metrics.json")
    assert metrics["videos_passed"] == 1 and metrics["videos_checked"] == 9
    assert "1/9 videos pass" in summary


def test_data_docs_are_written(planted):
    _run(planted)
    index = planted / "report" / "index.html"
    assert index.exists()
    pages = {p.parent.parent.parent.name: p.read_text()
             for p in (planted / "report" / "validations").rglob("*.html")}
    assert set(pages) == {"asr_words", "asr_videos"}
    assert "start_step_s" in pages["asr_words"] and "words_per_minute" in pages["asr_videos"]


def test_the_stage_fails_under_the_minimum_pass_rate(planted):
    with pytest.raises(UserError, match=r"under validate.min_pass_rate = 0.5"):
        _run(planted, min_pass_rate=0.5)
    # the outputs are still there to inspect
    assert (planted / "asr" / "validation_quarantine.parquet").exists()


def test_thresholds_come_from_params(planted):
    _, strict = _run(planted, max_words_per_minute=60.0)
    assert "expect_column_values_to_be_between(words_per_minute)" in strict["good"]


def test_videos_rejected_by_asr_are_not_checked(planted):
    write_table(frame([{"video_id": "mute", "uri": None, "stage": "asr",
                        "reason": "no audio track"}], "quarantine"),
                planted / "asr" / "quarantine.parquet", "quarantine")
    _, reasons = _run(planted)
    assert "mute" not in reasons


def test_window_feasibility():
    starts = np.array([0.5, 4.5, 8.5, 12.5])
    assert windows_possible(starts, 20.0, 4, 3.0, 1.0)
    assert not windows_possible(starts[:3], 20.0, 4, 3.0, 1.0)
    assert not windows_possible(starts, 10.0, 4, 3.0, 1.0)  # too short for 4 windows
    assert not windows_possible(np.array([]), 20.0, 2, 1.0, 1.0)


def test_polars_frames_convert(planted):
    # the words table reaches great-expectations as pandas (it wants pandas, not polars)
    words = read_table(planted / "asr" / "words.parquet", "words")
    assert isinstance(words, pl.DataFrame) and words.to_pandas().shape[0] == words.height

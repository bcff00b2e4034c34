from pathlib import Path

import pytest
import yaml

from tvts import config
from tvts.cli import main
from tvts.config import ParamsError, load_params, resolve

from .conftest import REPO, micro


def test_repo_params_are_the_demo_profile():
    p = load_params(REPO / "params.yaml")
    assert p.profile == "demo"
    assert p.sort.lambda_ == 2.0
    assert p.corpus.source == "demo"
    # the demo profile is the schema defaults: params.yaml only restates some of them
    assert p == resolve({})


def test_sort_lambda_is_a_real_key_in_params_yaml():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert raw["sort"]["lambda"] == 2.0
    assert resolve({"sort": {"lambda": 0.5}}).sort.lambda_ == 0.5


def test_paper_profile_values():
    p = resolve({"profile": "paper"})
    v = p.model.video
    assert (v.width, v.depth, v.heads, v.patch_size, v.tubelet) == (768, 12, 12, 16, 2)
    assert (p.data.num_frames, p.data.frame_size, p.data.num_transcripts) == (16, 224, 4)
    assert p.data.mask_ratio == 0.75 and p.contrastive.temperature == 0.05
    assert p.sort.lambda_ == 2.0 and p.pretrain.lr == 1e-4
    assert (p.pretrain.batch_size, p.pretrain.epochs) == (1024, 20)
    assert (p.post_pretrain.image_frames, p.post_pretrain.clip_frames) == (1, 4)
    assert p.post_pretrain.epochs == 12
    assert p.model.text.name == "distilbert-base-uncased"
    # post-pretraining: the paper's batch of 800, the release's constant rate
    post = p.post_pretrain
    assert post.batch_size == 800
    from tvts.train.schedule import lr_at

    rates = {lr_at(e + 0.5, post.lr, post.schedule, post.epochs, post.lr_milestones,
                   post.warmup_epochs) for e in range(post.epochs)}
    assert rates == {1e-4}
    assert p.corpus.yt_temporal.text == "denoised"  # the release's transcript words


def test_paper_profile_refuses_to_train_from_scratch_by_accident(tmp_path):
    p = resolve({"profile": "paper"})
    with pytest.raises(ParamsError, match=r"model\.video\.init is not set.*ImageMAE-Base.*"
                                          r"mae_pretrain_vit_base\.pth.*`scratch`"):
        p.check_video_init()
    resolve({"profile": "paper", "model": {"video": {"init": "scratch"}}}).check_video_init()
    resolve({"profile": "paper", "model": {"video": {"init": "/w/mae.pth"}}}).check_video_init()
    resolve({}).check_video_init()  # the demo trains from scratch: no MAE weights offline
    # the stage stops before reading anything (the tables named here do not exist)
    from tvts.stages import pretrain as pretrain_stage

    with pytest.raises(ParamsError, match=r"model\.video\.init is not set"):
        pretrain_stage.run(p, tmp_path / "none.parquet", tmp_path / "none.parquet",
                           tmp_path / "out", tmp_path / "m.json", None)


def test_params_yaml_keys_override_the_profile():
    p = micro({"corpus": {"demo": {"num_videos": 7}}})
    assert p.corpus.demo.num_videos == 7
    assert p.corpus.demo.width == 96  # still micro's


def test_micro_is_smaller_than_demo():
    small, demo = micro(), resolve({})
    assert small.corpus.demo.num_videos < demo.corpus.demo.num_videos
    assert small.model.video.width < demo.model.video.width


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"sort": {"lamda": 2}}, ["sort.lamda: unknown key", "Did you mean 'lambda'?"]),
        ({"corpuss": {}}, ["corpuss: unknown key", "Did you mean 'corpus'?"]),
        ({"sort": {"modeling": "ranking"}}, ["sort.modeling = 'ranking'", "'kway'", "'pairwise'"]),
        ({"corpus": {"demo": {"width": 33}}}, ["corpus.demo.width = 33", "multiple of 2"]),
        ({"corpus": {"demo": {"fps": "fast"}}}, ["corpus.demo.fps = 'fast'", "integer"]),
        ({"data": {"mask_ratio": 1.5}}, ["data.mask_ratio = 1.5", "less than 1"]),
        ({"corpus": {"source": "s3://"}}, ["corpus.source = 's3://'", "needs a bucket"]),
        ({"data": {"window_s": [5, 3]}}, ["data.window_s", "min <= max"]),
        ({"profile": "huge"}, ["profile = 'huge'", "demo, micro, paper"]),
    ],
)
def test_bad_params_name_key_value_and_allowed(raw, expected):
    with pytest.raises(ParamsError) as err:
        resolve(raw, "params.yaml")
    msg = str(err.value)
    assert msg.startswith("params.yaml: invalid params")
    for piece in expected:
        assert piece in msg


def test_all_problems_reported_at_once():
    with pytest.raises(ParamsError) as err:
        resolve({"sort": {"lamda": 1}, "seed": "x"})
    assert "sort.lamda" in str(err.value) and "seed = 'x'" in str(err.value)


def test_typo_in_a_profile_names_the_profile_file(tmp_path, monkeypatch):
    (tmp_path / "broken.yaml").write_text("data:\n  num_frame: 8\n")
    monkeypatch.setattr(config.loader, "PROFILES_DIR", tmp_path)
    with pytest.raises(ParamsError) as err:
        resolve({"profile": "broken"})
    assert str(tmp_path / "broken.yaml") in str(err.value)
    assert "data.num_frame: unknown key" in str(err.value)


def test_not_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("sort: [\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- 1\n")
    with pytest.raises(ParamsError, match="must be a mapping"):
        load_params(bad)
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "missing.yaml")


def test_cli_params_check(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("profile: micro\nsort:\n  lambda: 0.5\n")
    assert main(["params", "check", "--file", str(good)]) == 0
    assert "ok (profile micro, 1 training process(es))" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("sort:\n  lambda: -1\n")
    assert main(["params", "check", "--file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "sort.lambda = -1" in err and "greater than or equal to 0" in err


def test_cli_params_show_prints_resolved(tmp_path, capsys):
    f = tmp_path / "p.yaml"
    f.write_text("profile: paper\n")
    assert main(["params", "show", "--file", str(f)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["video"]["width"] == 768
    assert shown["sort"]["lambda"] == 2.0
    assert resolve(shown) == resolve({"profile": "paper"})


def test_every_profile_file_is_valid():
    for name in config.available_profiles():
        resolve({"profile": name}, f"profile {name}")
    assert {"demo", "micro", "paper"} <= set(config.available_profiles())
    assert Path(config.PROFILES_DIR, "paper.yaml").exists()


# ---------------------------------------------------------------- rules across sections
@pytest.mark.parametrize(
    ("raw", "world", "expected"),
    [
        ({"data": {"frame_size": 60}}, 1,
         "model.video.patch_size = 16 does not divide data.frame_size = 60: set "
         "data.frame_size to a multiple of 16, e.g. 64"),
        ({"data": {"num_frames": 7}}, 1,
         "data.num_frames = 7 is not a multiple of model.video.tubelet = 2: set "
         "data.num_frames to e.g. 8"),
        ({"post_pretrain": {"clip_frames": 3}}, 1,
         "post_pretrain.clip_frames = 3 is not a multiple of model.video.tubelet = 2"),
        ({"pretrain": {"micro_batch": 3}}, 1,
         "pretrain.micro_batch = 3 does not divide the 16 clips each of 1 process(es) takes "
         "of pretrain.batch_size = 16: set pretrain.micro_batch to a divisor of 16, e.g. 2"),
        ({}, 3, "pretrain.batch_size = 16 does not split over 3 processes: set "
                "pretrain.batch_size to a multiple of 3, e.g. 15"),
        ({"pretrain": {"micro_batch": 4}, "data": {"samples_per_decode": 3}}, 1,
         "data.samples_per_decode = 3 does not divide pretrain's micro-batch of 4 clips"),
    ],
)
def test_cross_section_rules_fail_at_load_naming_both_keys(raw, world, expected):
    with pytest.raises(ParamsError) as e:
        resolve(raw, world_size=world)
    assert expected in str(e.value)
    assert "{" not in str(e.value)  # the message, not a dump of the params


def test_batch_rules_read_the_process_count_of_torchrun(monkeypatch):
    resolve({"pretrain": {"batch_size": 12}, "post_pretrain": {"batch_size": 12}})
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(ParamsError, match=r"pretrain\.batch_size = 12 does not split over 8"):
        resolve({"pretrain": {"batch_size": 12}})
    resolve({"pretrain": {"batch_size": 16}}, world_size=4)  # an explicit count wins


def test_cli_params_check_takes_a_process_count(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("profile: demo\n")
    assert main(["params", "check", "--file", str(path), "--world-size", "4"]) == 0
    assert main(["params", "check", "--file", str(path), "--world-size", "3"]) == 2
    assert "does not split over 3 processes" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../../x", "a/b", "x.parquet", "", "1st", "quarantine",
                                  "Quarantine", "features", "a b"])
def test_downstream_set_names_are_safe_file_names(name):
    with pytest.raises(ParamsError, match=r"downstream\.sets"):
        resolve({"downstream": {"sets": {name: "demo"}}})


def test_downstream_set_names_differing_in_case_are_refused():
    with pytest.raises(ParamsError, match="differ only in case"):
        resolve({"downstream": {"sets": {"ssv2": "demo", "SSV2": "demo"}}})
    resolve({"downstream": {"sets": {"ssv2": "demo", "my-set_2": "/data/x"}}})


# ---------------------------------------------------------------- stages run out of order
@pytest.mark.parametrize(("stage", "expected"), [
    ("asr", "data/corpus/videos.parquet (the videos table) does not exist: the `corpus` stage "
            "makes it. Run `dvc repro corpus`"),
    ("dedup", "data/asr/valid.parquet (the videos table) does not exist: the `validate` stage"),
    ("evaluate", "models/pretrain/tvts.safetensors (an exported model) does not exist: the "
                 "`pretrain` stage"),
    ("post_pretrain", "post_pretrain.images = 'data/corpus/demo/downstream/cc3m': no such "
                      "directory"),
])
def test_a_stage_before_its_inputs_names_what_is_missing_and_who_makes_it(
        tmp_path, monkeypatch, capsys, stage, expected):
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    (tmp_path / "params.yaml").write_text("profile: micro\n")
    monkeypatch.chdir(tmp_path)
    assert main(["stage", stage]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err

import csv
import dataclasses
import json
import re
import shutil

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from sklearn.metrics import log_loss as sk_log_loss

from deepfake_lib.core.faults import Faults
from deepfake_lib.execution.batches import call_within
from deepfake_lib.execution.resources import Resources
from deepfake_lib.media import faces
from deepfake_lib.models import metrics
from deepfake_lib.models.detector import load_model
from deepfake_lib.stages.score import (
    SCORE_SCHEMA,
    STATUSES,
    ScoreConfig,
    aggregate,
    coarse_to_fine,
    run_score,
    score_video,
)


def _submission(out):
    with open(out / "submission.csv") as f:
        return list(csv.DictReader(f))


def _within(seconds: float, call):
    """``call()``'s result or exception, or a test failure if it takes longer than
    ``seconds`` (it is left running in a daemon thread: a hang must not hang the tests)."""
    try:
        return call_within(seconds, call)
    except TimeoutError:
        pytest.fail(f"still waiting after {seconds:g} s")


@pytest.mark.ray
def test_every_shared_video_is_scored_once_and_the_leaderboard_is_right(tiny_model, shared_data,
                                                                         tmp_path):
    out = tmp_path / "run"
    summary = run_score(ScoreConfig(data=(str(shared_data / "videos"),), out=str(out),
                                    model=str(tiny_model), frames=8))
    names = [r["filename"] for r in _submission(out)]
    assert sorted(names) == sorted(p.name for p in (shared_data / "videos").glob("*/*.mp4"))
    scores = pq.read_table(out / "scores")
    assert scores.schema.equals(SCORE_SCHEMA, check_metadata=False)
    rows = scores.to_pylist()
    assert {r["status"] for r in rows} == {"ok"} and summary.statuses == {"ok": 11}
    # the pool as sized is recorded, and it fits the cluster
    record = json.loads((out / "score.json").read_text())["summary"]
    assert record["actors"] == summary.actors >= 1 and record["cpus_per_actor"] >= 1
    assert summary.actors * summary.cpus_per_actor <= ray.cluster_resources()["CPU"]
    for r in rows:
        assert 0.01 <= r["prob"] <= 0.99 and r["n_faces"] >= r["n_frames"] > 0
        assert r["seconds"] >= r["decode_s"] + r["locate_s"] + r["classify_s"] - 1e-3
    labelled = [r for r in rows if r["label"] is not None]
    assert len(labelled) == 8  # FF++ (6) and DFDC (2); the clips are unlabelled
    board = json.loads((out / "leaderboard.json").read_text())
    expected = sk_log_loss([r["label"] for r in labelled], [r["prob"] for r in labelled],
                           labels=[0, 1])
    assert board["logloss"] == pytest.approx(expected, rel=1e-9)
    assert board["statuses"] == {"ok": 11} and board["count"] == 8
    assert 0 < board["time_p50"] <= board["time_p95"] <= board["time_max"]
    assert (out / "figures" / "roc_calibration.png").stat().st_size > 10_000

    before = (out / "submission.csv").read_bytes()
    again = run_score(ScoreConfig(data=(str(shared_data / "videos"),), out=str(out),
                                  model=str(tiny_model), frames=8))
    assert again.videos == 11 and (out / "submission.csv").read_bytes() == before

    # another model, or other settings, on the finished scores: refused, nothing rewritten
    other = tmp_path / "other_model"
    shutil.copytree(tiny_model, other)
    saved = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**saved, "temperature": 2.0}))
    with pytest.raises(ValueError, match="another model"):
        run_score(ScoreConfig(data=(str(shared_data / "videos"),), out=str(out),
                              model=str(other), frames=8))
    with pytest.raises(ValueError, match="frames=8 then, 16 now"):
        run_score(ScoreConfig(data=(str(shared_data / "videos"),), out=str(out),
                              model=str(tiny_model), frames=16))
    assert (out / "submission.csv").read_bytes() == before
    # --overwrite on the finished scores redoes every video, with a pool sized for them all
    redone = run_score(ScoreConfig(data=(str(shared_data / "videos"),), out=str(out),
                                   model=str(other), frames=8, overwrite=True))
    assert redone.videos == 11 and redone.actors >= 1 and redone.succeeded


@pytest.mark.ray
def test_a_stuck_video_times_out_and_the_others_score(tiny_model, shared_data, tmp_path):
    out = tmp_path / "run"
    config = ScoreConfig(data=(str(shared_data / "videos" / "clips"),), out=str(out),
                         model=str(tiny_model), frames=8, budget_s=4.0, grace_s=2.0,
                         fallback=0.5)
    _within(600, lambda: run_score(config, Faults(slow_videos=("news_anchor.mp4",))))
    rows = {r["video_id"]: r for r in pq.read_table(out / "scores").to_pylist()}
    stuck = rows["news_anchor.mp4"]
    assert stuck["status"] == "timeout" and stuck["prob"] == 0.5
    assert "killed" in stuck["message"] and "fallback" in stuck["message"]
    assert stuck["seconds"] >= 6.0  # killed at budget + grace, not before (the hour: a hang)
    assert {rows[v]["status"] for v in rows if v != "news_anchor.mp4"} == {"ok"}
    assert len(_submission(out)) == 3


@pytest.mark.ray
def test_an_answer_cut_short_by_the_budget_is_partial_not_a_timeout(tiny_model, shared_data):
    config = ScoreConfig(data=(), out="unused", frames=32, budget_s=1e-9)
    model = load_model(str(tiny_model), device="cpu")
    row = score_video(str(shared_data / "videos" / "ffpp" / "004.mp4"),
                      faces.get_face_detector(model.config.face_detector, "cpu"), model, config,
                      fallback=0.5)
    # the first 8 frames (spread over the video) are always classified, then the budget stops it
    assert row["status"] == "partial" and row["n_frames"] == 8 and row["n_faces"] >= 8
    assert "8 of 32 frames" in row["message"]
    assert set(STATUSES) >= {"ok", "partial", "timeout"}


@pytest.mark.ray
@pytest.mark.parametrize("flags,wanted", [(["--gpus-per-actor", "1"], "1 GPU"),
                                          (["--cpus-per-actor", "64"], "64 CPU")])
def test_actors_that_can_never_start_are_refused_at_once(tiny_model, shared_data, tmp_path,
                                                        capsys, flags, wanted):
    from jobs.score import main

    argv = ["--data", str(shared_data / "videos" / "dfdc"), "--out", str(tmp_path / "run"),
            "--model", str(tiny_model), *flags]
    assert _within(60, lambda: main(argv)) == 1
    err = capsys.readouterr().err
    assert "cannot run on this Ray cluster" in err and wanted in err


@pytest.mark.ray
def test_fewer_videos_than_cpus_share_the_cpus_and_flags_given_stay(ray_session):
    from deepfake_lib.execution.actor_pool import sized

    cpus = ray_session.cluster_resources()["CPU"]
    actors = ScoreConfig(data=(), out="unused").actors
    one, many = sized(actors, 1), sized(actors, 100)
    assert cpus >= 2 and (one.count, one.cpus) == (1, cpus)
    assert (many.count, many.cpus) == (cpus, 1)
    asked = sized(dataclasses.replace(actors, count=1, cpus=0.5), 100)
    assert (asked.count, asked.cpus) == (1, 0.5)
    on_gpus = sized(dataclasses.replace(actors, gpus=0.5), 1)
    assert (on_gpus.count, on_gpus.cpus) == (1, 1)


@pytest.mark.ray
def test_no_actor_ready_within_the_start_timeout_is_a_clear_error(tiny_model, shared_data,
                                                                  tmp_path):
    import ray

    @ray.remote(num_cpus=1)
    class Hog:
        def ready(self) -> bool:
            return True

    # every CPU taken: the actor fits the cluster, but no room comes
    hogs = [Hog.remote() for _ in range(int(ray.cluster_resources()["CPU"]))]
    ray.get([h.ready.remote() for h in hogs])
    config = ScoreConfig(data=(str(shared_data / "videos" / "dfdc"),), out=str(tmp_path / "run"),
                         model=str(tiny_model), frames=8, actors=Resources("actor", count=1),
                         start_timeout_s=3)
    try:
        with pytest.raises(RuntimeError, match="no scoring actor became ready within 3 s"):
            _within(60, lambda: run_score(config))
    finally:
        for hog in hogs:
            ray.kill(hog)


@pytest.mark.ray
def test_bad_inputs_get_error_rows_with_the_fallback(tiny_model, shared_data, bad_inputs,
                                                     tmp_path):
    folder, expected = bad_inputs
    out = tmp_path / "run"
    run_score(ScoreConfig(data=(str(folder), str(shared_data / "videos" / "dfdc")), out=str(out),
                          model=str(tiny_model), frames=8, fallback=0.0, clip=0.02))
    rows = {r["video_id"]: r for r in pq.read_table(out / "scores").to_pylist()}
    submitted = {r["filename"]: r["label"] for r in _submission(out)}
    for name, kind in expected.items():
        # the fallback is clipped like every probability: 0 would cost an infinite log loss
        assert rows[name]["status"] == "error" and rows[name]["prob"] == pytest.approx(0.02)
        assert rows[name]["message"].startswith(kind) and submitted[name] == "0.020000"
    assert rows["lynaeydofd.mp4"]["status"] == "ok"
    assert sorted(submitted) == sorted(rows)


def test_the_user_config_holds_no_test_hooks():
    names = {f.name for f in dataclasses.fields(ScoreConfig)}
    assert not names & {f.name for f in dataclasses.fields(Faults)}


def test_the_fallback_is_one_half_unless_asked_and_must_be_a_probability():
    assert ScoreConfig(data=(), out="run").fallback == 0.5  # not the share of fakes in training
    for fallback in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"--fallback .*: must be in \[0, 1\]"):
            ScoreConfig(data=(), out="run", fallback=fallback)


@pytest.mark.ray
def test_an_actor_that_dies_is_replaced_and_no_video_is_lost(tiny_model, shared_data, tmp_path):
    out = tmp_path / "run"
    marker = tmp_path / "died"
    summary = run_score(ScoreConfig(data=(str(shared_data / "videos" / "ffpp"),), out=str(out),
                                    model=str(tiny_model), frames=8),
                        Faults(crash_once_marker=str(marker)))
    assert marker.exists()
    assert summary.statuses == {"ok": 6}
    assert sorted(r["filename"] for r in _submission(out)) == sorted(
        p.name for p in (shared_data / "videos" / "ffpp").glob("*.mp4"))


def test_aggregation_rules():
    tracks = {0: [0.1, 0.1, 0.1, 0.1], 1: [0.9, 0.95, 0.2, 0.1, 0.85]}
    every = [0.1] * 4 + [0.9, 0.95, 0.2, 0.1, 0.85]
    assert aggregate(tracks, "mean") == pytest.approx(np.mean(every))
    assert aggregate(tracks, "max_track") == pytest.approx(np.mean([0.9, 0.95, 0.2, 0.1, 0.85]))
    assert aggregate(tracks, "confident") == pytest.approx(np.mean(every))  # 3 sure fakes: too few
    with pytest.raises(ValueError):
        aggregate({}, "mean")


def test_confident_takes_the_fake_mean_only_for_many_confident_fakes():
    # a long confident fake: 20 of 32 crops above 0.8 (more than 11, more than 32 // 2.5)
    long_fake = [0.95] * 20 + [0.5] * 12
    assert aggregate({0: long_fake}, "confident") == pytest.approx(0.95)
    # a short partial answer (8 frames) with a few confident fakes stays the plain mean
    partial = [0.95] * 5 + [0.3] * 3
    assert aggregate({0: partial}, "confident") == pytest.approx(np.mean(partial))
    # a crowded real video: three people clearly real, one with five noisy frames
    crowded = {0: [0.05] * 10, 1: [0.05] * 10, 2: [0.05] * 10, 3: [0.9] * 5 + [0.1] * 5}
    every = [p for ps in crowded.values() for p in ps]
    assert aggregate(crowded, "confident") == pytest.approx(np.mean(every))
    assert aggregate(crowded, "confident") < 0.2
    # confidently real: more than 90% of the crops below 0.2
    real = [0.05] * 30 + [0.6] * 2
    assert aggregate({0: real[:16], 1: real[16:]}, "confident") == pytest.approx(0.05)
    # 12 confident fakes among 31 crops: 31 // 2.5 is 12, so not more: the plain mean
    border = [0.9] * 12 + [0.3] * 19
    assert aggregate({0: border}, "confident") == pytest.approx(np.mean(border))


def test_coarse_to_fine_prefixes_span_the_range():
    order = coarse_to_fine(32)
    assert sorted(order) == list(range(32))
    assert order[:2] == [0, 16] and max(order[:4]) >= 24


def test_log_loss_matches_scikit_learn():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.1, 0.8, 0.6, 0.4, 0.999])
    assert metrics.log_loss(y, p) == pytest.approx(sk_log_loss(y, p))


class _Recorder:
    """A stand-in model that keeps the crops it is given (and calls them real)."""

    def __init__(self, config):
        self.config, self.crops = config, []

    def predict(self, crops):
        self.crops += crops
        return np.full(len(crops), 0.25, np.float32)


@pytest.mark.ray
def test_score_cuts_faces_as_the_saved_model_was_trained_on_them(tiny_model, shared_data):
    from deepfake_lib.models.detector import ModelConfig

    saved = ModelConfig.from_json((tiny_model / "config.json").read_text())
    path = str(shared_data / "videos" / "ffpp" / "004.mp4")
    config = ScoreConfig(data=(), out="unused", frames=4)
    detector = faces.get_face_detector(saved.face_detector, "cpu")
    seen = {}
    for margin in (0.0, 0.5):
        model = _Recorder(dataclasses.replace(saved, crop_margin=margin, image_size=48))
        assert score_video(path, detector, model, config, 0.5)["status"] == "ok"
        seen[margin] = model.crops
        assert {c.shape for c in model.crops} == {(48, 48, 3)}
    # the same faces, framed at the saved margins: the face box fills a crop at margin 0 and
    # the middle half of one at margin 0.5
    assert len(seen[0.0]) == len(seen[0.5]) >= 4
    def gap(a, b):
        return np.mean([np.abs(x.astype(int) - y).mean() for x, y in zip(a, b)])
    middle = [cv2.resize(c[12:36, 12:36], (48, 48)) for c in seen[0.5]]
    assert gap(middle, seen[0.0]) < 0.5 * gap(seen[0.5], seen[0.0])


@pytest.fixture(scope="module")
def tiny_weights() -> bytes:
    """model.pt of an untrained tiny network (ResNet-18 U-Net), as the train stage saves it."""
    import io

    import torch

    from deepfake_lib.models.detector import ModelConfig, build_model

    buf = io.BytesIO()
    torch.save(build_model(ModelConfig(**TINY), pretrained=False).state_dict(), buf)
    return buf.getvalue()


TINY = {"encoder": "resnet18", "encoder_weights": "none", "image_size": 64}


@pytest.mark.parametrize("damage,message", [
    ("missing", r"\(model.pt missing\): run jobs/train.py first"),
    ("empty", r"model.pt cannot be read as PyTorch weights \(damaged or cut short: EOFError\)"),
    ("random", r"model.pt cannot be read as PyTorch weights \(damaged or cut short: \w+\)"),
    ("cut", r"model.pt cannot be read as PyTorch weights \(damaged or cut short: \w+\)"),
    ("other", r"model.pt does not hold the weights of a Unet with encoder resnet34, as "
              r"config.json says: Error\(s\) in loading state_dict for Unet: Missing key"),
])
def test_a_missing_or_damaged_model_is_one_line_before_any_actor_starts(
        damage, message, tiny_weights, tmp_path, monkeypatch, capsys):
    import os

    from deepfake_lib import cli
    from deepfake_lib.models.detector import ModelConfig
    from deepfake_lib.stages import score
    from jobs.score import main

    model = tmp_path / "model"
    model.mkdir()
    config = ModelConfig(**TINY)
    if damage == "other":  # weights of another encoder
        config = ModelConfig(**{**TINY, "encoder": "resnet34"})
    (model / "config.json").write_text(config.to_json())
    weights = {"missing": None, "empty": b"", "random": os.urandom(4096),
               "cut": tiny_weights[: len(tiny_weights) // 2], "other": tiny_weights}[damage]
    if weights is not None:
        (model / "model.pt").write_bytes(weights)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"not looked at")
    monkeypatch.setattr(cli, "init_ray", lambda *args, **kwargs: None)
    monkeypatch.setattr(score, "check_resources",
                        lambda *a, **k: pytest.fail("actors were about to start"))
    code = main(["--data", str(tmp_path / "videos"), "--out", str(tmp_path / "run"),
                 "--model", str(model)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert re.search(message, err) and err.startswith("score: "), err


def test_a_whole_model_loads(tiny_weights, tmp_path):
    from deepfake_lib.models.detector import ModelConfig

    (tmp_path / "config.json").write_text(ModelConfig(**TINY).to_json())
    (tmp_path / "model.pt").write_bytes(tiny_weights)
    model = load_model(str(tmp_path), device="cpu")
    assert model.predict([np.zeros((80, 80, 3), np.uint8)]).shape == (1,)

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from deepfake_lib.core.faults import Faults
from deepfake_lib.core.records import ERROR_SCHEMA
from deepfake_lib.data.dataset import build_manifest
from deepfake_lib.execution.batches import call_within
from deepfake_lib.media import faces
from deepfake_lib.media.video import probe, read_frames
from deepfake_lib.stages.encode import (
    ENCODING_SCHEMA,
    EncodeConfig,
    encode_video,
    plan_batches,
    run_encode,
)

pytestmark = pytest.mark.ray


def _files(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.exists() else {}


def test_plan_is_deterministic_and_selects_reals(shared_data):
    manifest = build_manifest(str(shared_data / "videos")).table
    config = EncodeConfig(data=(), out="unused", batch_size=4)
    plan = plan_batches(manifest, config)
    ids = [v for _, rows in plan for v in rows.column("video_id").to_pylist()]
    # reals and unlabelled only: the 3 FF++ originals, the DFDC real, the 3 clips
    assert sorted(ids) == sorted(["004.mp4", "519.mp4", "634.mp4", "lynaeydofd.mp4",
                                  "multi_person_1080p.mp4", "news_anchor.mp4",
                                  "short_hamilton_clip.mp4"])
    assert [n for n, _ in plan] == [n for n, _ in plan_batches(manifest, config)]
    everything = plan_batches(manifest, EncodeConfig(data=(), out="unused", all_videos=True))
    assert sum(rows.num_rows for _, rows in everything) == 11


def test_encode_video_without_ray(shared_data):
    path = shared_data / "videos" / "clips" / "short_hamilton_clip.mp4"
    row = {"video_id": path.name, "path": str(path), "part": "clips", "label": None,
           "original": None}
    info, rows, error = encode_video(row, faces.get_face_detector("auto"),
                                     EncodeConfig((), "unused"))
    assert error is None and info["status"] == "ok"
    assert info["n_faces"] == len(rows) == 2  # two people in the clip
    assert rows[0]["face_index"] == 0 and rows[1]["face_index"] == 1
    assert rows[0]["left"] >= rows[1]["right"] or rows[1]["left"] >= rows[0]["right"]


def test_encodings_tell_people_apart(shared_data):
    """The same person in two frames 6 s apart is closer than two different people."""
    detector = faces.get_face_detector("auto")

    def encoding(path, index):
        frame = read_frames(str(path), [index])[index]
        return faces.encode_faces(frame, [detector.detect(frame)[0].box])[0]

    anchor = shared_data / "videos" / "clips" / "news_anchor.mp4"
    same = np.linalg.norm(encoding(anchor, 0) - encoding(anchor, 150))
    other = np.linalg.norm(encoding(anchor, 0)
                           - encoding(shared_data / "videos" / "ffpp" / "004.mp4", 0))
    assert same < 0.45 < 0.6 < other


def test_encode_job_on_every_shared_video(ray_session, shared_data, tmp_path):
    out = tmp_path / "run"
    summary = run_encode(EncodeConfig(data=(str(shared_data / "videos"),), out=str(out),
                                      all_videos=True, batch_size=4))
    assert summary.videos == 11 and summary.encoded == 11 and summary.errors == {}
    table = pq.read_table(out / "encodings")
    assert table.schema.equals(ENCODING_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    videos = {p.name for p in (shared_data / "videos").glob("*/*.mp4")}
    assert {r["video_id"] for r in rows} == videos
    assert len({(r["video_id"], r["face_index"]) for r in rows}) == len(rows)
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    sizes = {m["video_id"]: (m["width"], m["height"]) for m in manifest}
    assert len(manifest) == 11 and sizes["brtujopkby.mp4"] == (1080, 1920)
    for r in rows:
        assert len(r["encoding"]) == 128 and all(np.isfinite(r["encoding"]))
        w, h = sizes[r["video_id"]]
        assert 0 <= r["top"] < r["bottom"] <= h and 0 <= r["left"] < r["right"] <= w
        assert 0.8 <= r["det_score"] <= 1.0
        assert faces.decode_image(r["thumb"]).shape == (96, 96, 3)
    counts = {}
    for r in rows:
        counts[r["video_id"]] = counts.get(r["video_id"], 0) + 1
    assert counts["short_hamilton_clip.mp4"] == 2 and counts["multi_person_1080p.mp4"] >= 6
    assert pq.read_table(out / "errors").num_rows == 0


def test_rerun_writes_nothing_and_crashed_task_leaves_no_duplicates(ray_session, shared_data,
                                                                     tmp_path):
    marker = tmp_path / "crashed"
    out = tmp_path / "run"
    config = EncodeConfig(data=(str(shared_data / "videos" / "ffpp"),), out=str(out),
                          batch_size=2)
    first = run_encode(config, Faults(crash_once_marker=str(marker)))
    assert marker.exists()  # a worker really died mid-batch, and its task was retried
    assert first.videos == 3 and first.encoded == 3
    ids = pq.read_table(out / "encodings").column("video_id").to_pylist()
    assert sorted(ids) == ["004.mp4", "519.mp4", "634.mp4"]  # one face each, no duplicates
    before = {d: _files(out / d) for d in ("encodings", "errors", "videos")}
    table = pq.read_table(out / "encodings")

    again = run_encode(config)
    assert again.batches_skipped == again.batches >= 1
    assert {d: _files(out / d) for d in before} == before
    assert pq.read_table(out / "encodings").equals(table)


def test_a_part_that_grows_redoes_only_the_new_videos_batch(ray_session, shared_data, tmp_path):
    part = tmp_path / "part"
    ffpp = shared_data / "videos" / "ffpp"
    part.mkdir()
    originals = ["004.mp4", "519.mp4", "634.mp4"]
    for name in originals:
        os.symlink(ffpp / name, part / name)
    out = tmp_path / "run"
    config = EncodeConfig(data=(str(part),), out=str(out), batch_size=1)
    first = run_encode(config)
    assert first.batches == 3 and first.encoded == 3
    before = _files(out / "encodings")

    os.symlink(ffpp / "004.mp4", part / "400.mp4")  # one more video in the part
    grown = run_encode(config)
    assert (grown.batches, grown.batches_skipped, grown.videos, grown.encoded) == (4, 3, 4, 4)
    after = _files(out / "encodings")
    assert {n: after[n] for n in before} == before  # the finished batches were not touched
    assert len(after) == 4

    # other settings, or fewer videos (other inputs), on the finished run: refused, untouched
    with pytest.raises(ValueError, match="detector='auto' then, 'hog' now"):
        run_encode(EncodeConfig(data=config.data, out=str(out), batch_size=1, detector="hog"))
    os.remove(part / "519.mp4")
    with pytest.raises(ValueError, match="other inputs.*--overwrite"):
        run_encode(config)
    assert _files(out / "encodings") == after
    redone = run_encode(EncodeConfig(data=config.data, out=str(out), batch_size=1,
                                     overwrite=True))
    assert (redone.videos, redone.batches_skipped) == (3, 0)


def test_bad_inputs_are_error_rows_and_good_videos_are_encoded(ray_session, shared_data,
                                                               bad_inputs, tmp_path):
    from jobs.encode import main

    folder, expected = bad_inputs
    out = tmp_path / "run"
    code = main(["--data", str(folder), str(shared_data / "videos" / "dfdc"), "--out", str(out)])
    assert code == 0
    errors = {r["video_id"]: r for r in pq.read_table(out / "errors").to_pylist()}
    assert {k: v["kind"] for k, v in errors.items()} == expected
    for r in errors.values():
        assert r["stage"] == "encode" and r["video_id"] in r["message"]  # the reason names the file
    assert pq.read_table(out / "errors").schema.equals(ERROR_SCHEMA, check_metadata=False)
    encoded = set(pq.read_table(out / "encodings").column("video_id").to_pylist())
    assert encoded == {"lynaeydofd.mp4"}  # the only REAL of the good folder


def test_a_stuck_video_is_a_timeout_row_and_its_batch_goes_on(ray_session, shared_data,
                                                               tmp_path):
    out = tmp_path / "run"
    config = EncodeConfig(data=(str(shared_data / "videos" / "ffpp"),), out=str(out),
                          batch_size=8, video_timeout_s=30.0)
    # a hang guard, not a speed test: the stuck video would take the hour
    summary = call_within(1800, lambda: run_encode(config, Faults(slow_videos=("519.mp4",),
                                                                 slow_seconds=3600)))
    assert summary.batches == 1 and summary.errors == {"timeout": 1}
    videos = {r["video_id"]: r for r in pq.read_table(out / "videos").to_pylist()}
    assert videos["519.mp4"]["status"] == "timeout" and videos["519.mp4"]["seconds"] == 30.0
    assert {videos[v]["status"] for v in ("004.mp4", "634.mp4")} == {"ok"}
    error = pq.read_table(out / "errors").to_pylist()[0]
    assert error["kind"] == "timeout" and "--video-timeout-s" in error["message"]


def test_nothing_to_encode_is_a_clear_error(ray_session, tmp_path):
    from jobs.encode import main

    (tmp_path / "empty").mkdir()
    assert main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")]) == 1
    assert main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path / "run")]) == 1


def test_video_properties_match_probe(shared_data, ray_session, tmp_path):
    out = tmp_path / "run"
    run_encode(EncodeConfig(data=(str(shared_data / "videos" / "dfdc"),), out=str(out)))
    rows = {r["video_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    info = probe(str(shared_data / "videos" / "dfdc" / "lynaeydofd.mp4"))
    real = rows["lynaeydofd.mp4"]
    assert (real["frame_count"], real["width"], real["height"]) == (300, 1920, 1080)
    assert real["fps"] == pytest.approx(info.fps) and real["status"] == "ok"
    assert rows["brtujopkby.mp4"]["status"] is None  # a fake: listed, not encoded by default
    assert os.path.exists(out / "encode.json")


def test_run_directory_inside_the_data_is_not_encoded(ray_session, shared_data, tmp_path):
    data = tmp_path / "data"
    (data / "photos").mkdir(parents=True)
    shutil.copy(shared_data / "faces" / "soccer" / "00000000.jpg", data / "photos" / "face.jpg")
    out = data / "run"
    (out / "figures").mkdir(parents=True)  # an earlier run's figure
    shutil.copy(shared_data / "faces" / "soccer" / "00000001.jpg", out / "figures" / "pca.jpg")
    summary = run_encode(EncodeConfig(data=(str(data),), out=str(out)))
    assert summary.videos == 1 and "manifest problems: 1 run_directory" in summary.text()
    assert pq.read_table(out / "manifest.parquet").column("video_id").to_pylist() == ["face.jpg"]


@pytest.mark.ray
def test_storage_failing_mid_run_is_one_line_and_the_rerun_redoes_what_was_not_written(
        ray_session, shared_data, tmp_path, monkeypatch, capsys):
    """The disk fills up after the batches, as the driver writes the manifest: one line, exit
    code 1, the stage's record says it did not finish, and the rerun writes what is missing
    (the batches written whole are kept) and ends as a clean run does."""
    from deepfake_lib.core.storage import RunDir
    from jobs.encode import main

    data = str(shared_data / "videos" / "dfdc")
    out, clean = tmp_path / "run", tmp_path / "clean"
    write_parquet = RunDir.write_parquet

    def disk_full_for_the_manifest(run, rel, table):
        if rel == "manifest.parquet":
            raise OSError(28, "No space left on device")
        return write_parquet(run, rel, table)

    monkeypatch.setattr(RunDir, "write_parquet", disk_full_for_the_manifest)
    assert main(["--data", data, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("encode: ") and err.count("\n") == 1 and "No space left" in err
    assert json.loads((out / "encode.json").read_text())["summary"] is None
    assert not (out / "manifest.parquet").exists()
    monkeypatch.undo()
    assert main(["--data", data, "--out", str(out)]) == 0
    assert "(1 already done)" in capsys.readouterr().out  # the whole batch was kept
    assert main(["--data", data, "--out", str(clean)]) == 0
    assert json.loads((out / "encode.json").read_text())["summary"]["encoded"] == 1
    for name, columns in (("manifest.parquet", ["video_id", "label", "status", "n_faces"]),
                          ("encodings", ["video_id", "frame_index", "encoding"])):
        assert pq.read_table(out / name, columns=columns).equals(
            pq.read_table(clean / name, columns=columns)), name

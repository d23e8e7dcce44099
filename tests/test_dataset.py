import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import deepfake_lib
from deepfake_lib.data.dataset import build_manifest, parse_metadata
from deepfake_lib.media import video


def _kinds(manifest):
    return sorted(manifest.problems.column("kind").to_pylist())


def test_full_dfdc_sample_metadata(tmp_path, shared_data):
    part = tmp_path / "train_sample_videos"
    part.mkdir()
    shutil.copy(shared_data / "dfdc" / "train_sample_videos_metadata.json", part / "metadata.json")
    m = build_manifest(str(tmp_path))
    rows = m.table.to_pylist()
    assert len(rows) == 400
    assert sum(r["label"] == "FAKE" for r in rows) == 323
    assert sum(r["label"] == "REAL" for r in rows) == 77
    ids = {r["video_id"] for r in rows}
    assert sum(r["label"] == "FAKE" and r["original"] in ids for r in rows) == 58
    assert all(r["original"] is None for r in rows if r["label"] == "REAL")
    # no video file is present: every entry is reported missing, none is dropped
    assert not any(r["exists"] for r in rows)
    assert _kinds(m) == ["missing_file"] * 400
    assert "400 videos in 1 parts (323 FAKE, 77 REAL)" in m.summary()


def test_shared_video_folders(shared_data):
    m = build_manifest(str(shared_data / "videos"))
    rows = {r["video_id"]: r for r in m.table.to_pylist()}
    assert len(rows) == 11
    assert {r["part"] for r in rows.values()} == {"clips", "dfdc", "ffpp"}
    assert rows["519_515.mp4"]["label"] == "FAKE" and rows["519_515.mp4"]["original"] == "519.mp4"
    # a DFDC fake whose original is absent stays usable
    assert rows["brtujopkby.mp4"]["label"] == "FAKE" and rows["brtujopkby.mp4"]["exists"]
    assert rows["brtujopkby.mp4"]["original"] == "gnmmhlbzge.mp4"
    assert rows["news_anchor.mp4"]["label"] is None  # clips/ has no metadata.json
    assert all(r["exists"] and r["media"] == "video" for r in rows.values())
    assert m.problems.num_rows == 0


def test_folder_of_photos_is_a_part_of_one_frame_videos(shared_data):
    m = build_manifest(str(shared_data / "faces" / "soccer"))
    assert m.table.num_rows == 129
    assert set(m.table.column("media").to_pylist()) == {"image"}
    assert set(m.table.column("label").to_pylist()) == {None}


def test_several_roots(shared_data):
    m = build_manifest([str(shared_data / "videos" / "ffpp"), str(shared_data / "videos" / "dfdc")])
    assert m.table.num_rows == 8


def test_bad_metadata_is_reported_and_loses_no_video(tmp_path):
    part = tmp_path / "part_1"
    part.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4", "extra.mp4"):
        (part / name).write_bytes(b"x")
    (part / "metadata.json").write_text(
        '{"a.mp4": {"label": "REAL", "split": "train", "original": null},'
        ' "a.mp4": {"label": "FAKE", "split": "train", "original": "z.mp4"},'
        ' "b.mp4": {"label": "fake", "original": "a.mp4"},'
        ' "c.mp4": {"label": "MAYBE"},'
        ' "gone.mp4": {"label": "REAL"}}')
    broken = tmp_path / "part_2"
    broken.mkdir()
    (broken / "d.mp4").write_bytes(b"x")
    (broken / "metadata.json").write_text('{"d.mp4": {"label": "REAL"')
    m = build_manifest(str(tmp_path))
    rows = {r["video_id"]: r for r in m.table.to_pylist()}
    assert sorted(rows) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "extra.mp4", "gone.mp4"]
    assert rows["a.mp4"]["label"] == "REAL"  # the first of the duplicate keys
    assert rows["b.mp4"]["label"] == "FAKE" and rows["b.mp4"]["original"] == "a.mp4"
    assert rows["c.mp4"]["label"] is None
    assert rows["d.mp4"]["label"] is None
    assert rows["gone.mp4"]["exists"] is False
    assert _kinds(m) == ["duplicate_key", "malformed_metadata", "missing_file",
                         "not_in_metadata", "not_in_metadata", "unknown_label"]
    messages = " ".join(m.problems.column("message").to_pylist())
    assert "not valid JSON" in messages and "gone.mp4" in messages


def test_duplicate_video_ids_across_parts_keep_the_first(tmp_path):
    for part in ("p1", "p2"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "same.mp4").write_bytes(b"x")
    m = build_manifest(str(tmp_path))
    assert m.table.column("part").to_pylist() == ["p1"]
    assert _kinds(m) == ["duplicate_id"]


@pytest.mark.parametrize("text", ["[1, 2]", "null", "\xff\xfe"])
def test_metadata_that_is_not_an_object(text):
    entries, problems = parse_metadata(text.encode("latin1"))
    assert entries == {} and problems[0][1] == "malformed_metadata"


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_manifest(str(tmp_path / "nowhere"))


def test_metadata_round_trip_matches_json():
    meta = {"x.mp4": {"label": "FAKE", "split": "train", "original": "y.mp4"},
            "y.mp4": {"label": "REAL", "split": "train", "original": None}}
    entries, problems = parse_metadata(json.dumps(meta))
    assert problems == [] and entries == meta


def test_unreadable_folder_and_metadata_are_problems_and_the_rest_is_listed(tmp_path):
    for part, name in (("ok", "a.mp4"), ("locked", "b.mp4"), ("closed_metadata", "c.mp4")):
        (tmp_path / part).mkdir()
        (tmp_path / part / name).write_bytes(b"x")
    (tmp_path / "closed_metadata" / "metadata.json").write_text('{"c.mp4": {"label": "REAL"}}')
    locked = [tmp_path / "locked", tmp_path / "closed_metadata" / "metadata.json"]
    code = ("import json, sys\nfrom deepfake_lib.data.dataset import build_manifest\n"
            "m = build_manifest(sys.argv[1])\n"
            "print(json.dumps([m.table.to_pylist(), m.problems.to_pylist()]))")
    # root reads anything: drop the capabilities that let it (as the issue reproduces it)
    drop = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
            if os.geteuid() == 0 else [])
    try:
        for path in locked:
            path.chmod(0)
        out = subprocess.run([*drop, sys.executable, "-c", code, str(tmp_path)],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(Path(deepfake_lib.__file__)
                                                                  .parents[1])})
    finally:
        for path in locked:
            path.chmod(0o755)
    assert out.returncode == 0, out.stderr
    rows, problems = json.loads(out.stdout)
    assert [r["video_id"] for r in rows] == ["c.mp4", "a.mp4"]
    assert rows[0]["label"] is None  # its metadata could not be read
    kinds = sorted((p["part"], p["kind"]) for p in problems)
    assert kinds == [("closed_metadata", "not_in_metadata"), ("closed_metadata", "permission"),
                     ("locked", "permission")]
    assert any(str(tmp_path / "locked") in p["message"] for p in problems)


@pytest.mark.parametrize("key", ["../a.mp4", "/etc/a.mp4", "sub/a.mp4", "sub\\a.mp4", "..", ".",
                                 ""])
def test_metadata_keys_are_file_names(key):
    entries, problems = parse_metadata(json.dumps({key: {"label": "REAL"}}))
    assert entries == {} and [p[1] for p in problems] == ["bad_name"]


def test_metadata_keys_with_a_path_are_never_listed(tmp_path, shared_data):
    data = tmp_path / "data"
    part = data / "part"
    (part / "sub").mkdir(parents=True)
    real = shared_data / "videos" / "ffpp" / "004.mp4"
    for path in (tmp_path / "outside.mp4", part / "a.mp4", part / "sub" / "in_sub.mp4"):
        shutil.copy(real, path)
    (part / "metadata.json").write_text(json.dumps({
        "a.mp4": {"label": "REAL"}, "../../outside.mp4": {"label": "REAL"},
        str(tmp_path / "outside.mp4"): {"label": "REAL"}, "sub/in_sub.mp4": {"label": "FAKE"}}))
    m = build_manifest(str(data))
    rows = {r["video_id"]: r for r in m.table.to_pylist()}
    assert sorted(rows) == ["a.mp4", "in_sub.mp4"]  # the file in sub/ once, from its own part
    assert rows["in_sub.mp4"]["part"] == "sub" and rows["in_sub.mp4"]["label"] is None
    assert all(r["exists"] and r["path"].startswith(str(data)) for r in rows.values())
    assert _kinds(m) == ["bad_name"] * 3


def test_broken_link_is_a_missing_row(tmp_path, shared_data):
    clips = tmp_path / "clips"  # no metadata.json
    labelled = tmp_path / "labelled"
    for part in (clips, labelled):
        part.mkdir()
        (part / f"{part.name}_good.mp4").symlink_to(shared_data / "videos" / "ffpp" / "004.mp4")
        (part / f"{part.name}_broken.mp4").symlink_to(tmp_path / "deleted.mp4")
    (labelled / "metadata.json").write_text(json.dumps({
        "labelled_good.mp4": {"label": "REAL"}, "labelled_broken.mp4": {"label": "REAL"}}))
    m = build_manifest(str(tmp_path))
    rows = m.table.to_pylist()
    assert [(r["video_id"], r["exists"]) for r in rows] == [
        ("clips_broken.mp4", False), ("clips_good.mp4", True),
        ("labelled_broken.mp4", False), ("labelled_good.mp4", True)]
    # one problem each, naming the link's target, and later stages call it missing
    assert [(p["part"], p["kind"]) for p in m.problems.to_pylist()] == [
        ("clips", "missing_file"), ("labelled", "missing_file")]
    assert all("deleted.mp4" in msg for msg in m.problems.column("message").to_pylist())
    with pytest.raises(video.VideoError) as err:
        video.probe(rows[0]["path"])
    assert err.value.kind == "missing"


def test_links_are_followed_and_a_folder_is_listed_once(tmp_path, shared_data):
    data = tmp_path / "data"
    (data / "part").mkdir(parents=True)
    (data / "part" / "linked.mp4").symlink_to(shared_data / "videos" / "ffpp" / "004.mp4")
    (data / "part" / "loop").symlink_to(data)  # a link back up: listed once, no duplicates
    (data / "dfdc").symlink_to(shared_data / "videos" / "dfdc")  # a part outside the data
    m = build_manifest(str(data))
    rows = {r["video_id"]: r for r in m.table.to_pylist()}
    assert rows["linked.mp4"]["exists"] and rows["linked.mp4"]["path"] == str(
        data / "part" / "linked.mp4")
    assert video.probe(rows["linked.mp4"]["path"]).frame_count > 0
    assert rows["lynaeydofd.mp4"]["part"] == "dfdc" and rows["lynaeydofd.mp4"]["label"] == "REAL"
    assert m.problems.num_rows == 0


def test_run_directory_inside_the_data_is_skipped(tmp_path, shared_data):
    data = tmp_path / "data"
    (data / "part").mkdir(parents=True)
    shutil.copy(shared_data / "videos" / "ffpp" / "004.mp4", data / "part" / "004.mp4")
    run = data / "run"
    (run / "figures").mkdir(parents=True)
    shutil.copy(shared_data / "faces" / "soccer" / "00000000.jpg", run / "figures" / "pca.jpg")
    shutil.copy(shared_data / "faces" / "soccer" / "00000001.jpg", run / "thumb.jpg")
    m = build_manifest(str(data), exclude=[str(data / "part" / ".." / "run")])
    assert m.table.column("video_id").to_pylist() == ["004.mp4"]
    assert _kinds(m) == ["run_directory"]
    assert str(run) in m.problems.column("message")[0].as_py()
    # without it, the run's outputs are input photos
    assert build_manifest(str(data)).table.num_rows == 3
    # a data root inside the run directory (the pipeline's built-in sample) is listed
    assert build_manifest(str(run / "figures"), exclude=[str(run)]).table.num_rows == 1


def test_run_directory_inside_data_on_s3_is_skipped(s3_endpoint):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for key in ("skip_run/part/a.mp4", "skip_run/run1/figures/pca.png", "skip_run/run1/t.jpg"):
        client.put_object(Bucket="data", Key=key, Body=b"x")
    m = build_manifest("s3://data/skip_run", exclude=["s3://data/skip_run/run1/", "/tmp"])
    assert m.table.column("path").to_pylist() == ["s3://data/skip_run/part/a.mp4"]
    assert _kinds(m) == ["run_directory"]
    assert m.problems.column("message")[0].as_py().startswith("s3://data/skip_run/run1:")


def test_prepare_does_not_take_its_run_directory_for_data(tmp_path, shared_data):
    from deepfake_lib.core.storage import RunDir
    from deepfake_lib.stages.prepare import PrepareConfig, make_plan

    data = tmp_path / "data"
    (data / "part").mkdir(parents=True)
    shutil.copy(shared_data / "faces" / "soccer" / "00000000.jpg", data / "part" / "face.jpg")
    out = data / "run"
    (out / "figures").mkdir(parents=True)
    shutil.copy(shared_data / "faces" / "soccer" / "00000001.jpg", out / "figures" / "pca.jpg")
    plan, errors = make_plan(RunDir(str(out)), PrepareConfig(data=(str(data),), out=str(out)))
    assert plan.column("video_id").to_pylist() == ["face.jpg"] and errors == []


def test_metadata_keys_that_are_not_media_are_problems_not_videos(tmp_path, shared_data):
    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(shared_data / "videos" / "ffpp" / "004.mp4", part / "a.mp4")
    (part / "notes.txt").write_text("not a video")
    (part / "metadata.json").write_text(json.dumps({
        "a.mp4": {"label": "REAL"}, "metadata.json": {"label": "REAL"},
        "notes.txt": {"label": "FAKE"}}))
    m = build_manifest(str(tmp_path))
    assert m.table.column("video_id").to_pylist() == ["a.mp4"]
    problems = m.problems.to_pylist()
    assert [(p["video_id"], p["kind"]) for p in problems] == [
        ("metadata.json", "not_media"), ("notes.txt", "not_media")]
    assert all("not a video or image" in p["message"] for p in problems)

import dataclasses
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from deepfake_lib.core.faults import Faults
from deepfake_lib.media import faces
from deepfake_lib.stages.prepare import (
    CROP_SCHEMA,
    PrepareConfig,
    assign_splits,
    run_prepare,
)

pytestmark = pytest.mark.ray


def test_ffpp_pairs_become_crops_with_masks(ffpp_crops):
    config, summary = ffpp_crops
    table = pq.read_table(f"{config.out}/crops")
    assert table.schema.equals(CROP_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    kinds = {k: sum(r["kind"] == k for r in rows) for k in ("pair", "real")}
    assert sum(kinds.values()) == len(rows)
    # a fake's crop is dropped only where its face was not altered: Deepfakes and FaceSwap
    # replace the face in every frame; NeuralTextures changes the mouth alone
    per_video = {v: sum(r["video_id"] == v for r in rows) for v in
                 ("519.mp4", "519_515.mp4", "634.mp4", "634_660.mp4", "004.mp4", "004_982.mp4")}
    assert per_video["519_515.mp4"] == per_video["519.mp4"]
    assert per_video["634_660.mp4"] == per_video["634.mp4"]
    assert per_video["004.mp4"] / 2 <= per_video["004_982.mp4"] <= per_video["004.mp4"]
    # 751, 338 and 309 frames, every 25th: at least one face in each sampled frame
    frames = {}
    for r in rows:
        if r["kind"] == "real":
            frames.setdefault(r["video_id"], set()).add(r["frame_index"])
    assert {v: len(f) for v, f in frames.items()} == {"519.mp4": 31, "634.mp4": 14, "004.mp4": 13}
    labels = [r["label"] for r in rows]
    assert labels.count(0) == kinds["real"] and labels.count(1) == kinds["pair"]
    assert len({r["sample_id"] for r in rows}) == len(rows)
    for r in rows:
        image, mask = faces.decode_image(r["image"]), faces.decode_image(r["mask"])[..., 0]
        assert image.shape == (256, 256, 3) and set(np.unique(mask)) <= {0, 1}
        assert (mask.sum() == 0) == (r["label"] == 0)
        top, right, bottom, left = r["face_box"]
        assert 0 <= top < bottom <= 256 and 0 <= left < right <= 256
        if r["kind"] == "real":  # the face's landmarks, inside its box (give or take)
            points = np.reshape(r["landmarks"], (-1, 2))
            assert points.shape == (72, 2)
            inside = ((points[:, 0] >= left - 20) & (points[:, 0] <= right + 20)
                      & (points[:, 1] >= top - 20) & (points[:, 1] <= bottom + 20))
            assert inside.all()
        if r["kind"] == "pair":
            assert r["original_id"] == r["video_id"].split("_")[0] + ".mp4"
    pair_masks = [faces.decode_image(r["mask"])[..., 0] for r in rows if r["kind"] == "pair"]
    assert np.mean([m.sum() > 0 for m in pair_masks]) > 0.9
    centre = np.mean([m[64:192, 64:192].sum() / max(1, m.sum()) for m in pair_masks if m.sum()])
    assert centre > 0.7  # the altered pixels are on the face, in the middle of the crop
    # a whole identity is in one split: each original with its fake
    split = {}
    for r in rows:
        assert split.setdefault(r["original_id"], r["split"]) == r["split"]
    assert set(split.values()) == {"train", "val"}
    assert (pq.read_table(f"{config.out}/prepare_errors").num_rows == 0)
    assert faces.decode_image(open(f"{config.out}/figures/masks.png", "rb").read()).shape[1] == 768


def test_an_original_is_decoded_once_for_all_its_fakes(shared_data, monkeypatch):
    from deepfake_lib.media import video
    from deepfake_lib.stages.prepare import prepare_unit

    ffpp = shared_data / "videos" / "ffpp"
    decoded = []
    read_frames = video.read_frames
    monkeypatch.setattr(video, "read_frames",
                        lambda path, indices: decoded.append(path) or read_frames(path, indices))
    unit = {"video_id": "004.mp4", "path": str(ffpp / "004.mp4"), "kind": "real", "real": True,
            "fake_ids": ["a.mp4", "b.mp4", "broken.mp4"],
            "fake_paths": [str(ffpp / "004_982.mp4")] * 2 + [str(ffpp / "missing.mp4")],
            "videos": 4, "cluster": -1, "split": "train"}
    config = PrepareConfig(data=(), out="unused", every=50)
    rows, errors = prepare_unit(unit, faces.get_face_detector(config.detector), config)
    assert decoded == [str(ffpp / "004.mp4")] + [str(ffpp / "004_982.mp4")] * 2
    by_video = {v: [r for r in rows if r["video_id"] == v] for v in ("004.mp4", "a.mp4", "b.mp4")}
    assert all(by_video.values()) and len(rows) == sum(map(len, by_video.values()))
    # both fakes are cut at the original's boxes: the same crops
    assert [r["image"] for r in by_video["a.mp4"]] == [r["image"] for r in by_video["b.mp4"]]
    assert [(e["video_id"], e["kind"]) for e in errors] == [("broken.mp4", "missing")]


def test_a_retried_task_loses_and_duplicates_no_crop(ffpp_crops, tmp_path):
    config, _ = ffpp_crops
    marker = tmp_path / "crashed"
    out = tmp_path / "run"
    # one batch of all three originals
    again = run_prepare(dataclasses.replace(config, out=str(out), batch_size=64),
                        Faults(crash_once_marker=str(marker)))
    assert marker.exists()  # a worker died after the first unit of its batch
    ids = pq.read_table(out / "crops", columns=["sample_id"]).column("sample_id").to_pylist()
    reference = pq.read_table(f"{config.out}/crops", columns=["sample_id"]).column("sample_id")
    assert len(ids) == len(set(ids)) and set(ids) == set(reference.to_pylist())
    assert again.errors == {}
    # the batch holds both splits, each in row groups of its own: validation reads no
    # training crop, nor training a validation crop
    (crops,) = [pq.ParquetFile(path) for path in (out / "crops").glob("*.parquet")]
    groups = [set(crops.read_row_group(g, columns=["split"]).column("split").to_pylist())
              for g in range(crops.num_row_groups)]
    assert all(len(g) == 1 for g in groups)
    splits = [g.pop() for g in groups]
    assert splits == sorted(splits) and set(splits) == {"train", "val"}


def test_rerun_skips_finished_batches(ffpp_crops):
    config, first = ffpp_crops
    again = run_prepare(config)
    assert again.batches_skipped == again.batches == first.batches
    assert again.crops == first.crops


def test_bad_inputs_are_error_rows(ray_session, shared_data, bad_inputs, tmp_path):
    from jobs.prepare import main

    folder, expected = bad_inputs
    out = tmp_path / "run"
    code = main(["--data", str(folder), str(shared_data / "videos" / "dfdc"), "--out", str(out),
                 "--every", "50"])
    assert code == 0
    errors = {r["video_id"]: r["kind"] for r in pq.read_table(out / "prepare_errors").to_pylist()}
    assert {k: errors[k] for k in expected} == expected
    assert errors["brtujopkby.mp4"] == "no_original"  # the DFDC fake's original is absent
    crops = pq.read_table(out / "crops").to_pylist()
    assert {r["video_id"] for r in crops} == {"lynaeydofd.mp4"}


def test_a_stuck_video_is_a_timeout_row_and_its_batch_goes_on(ray_session, shared_data,
                                                               tmp_path):
    part = tmp_path / "part"
    part.mkdir()
    os.symlink(shared_data / "videos" / "dfdc" / "lynaeydofd.mp4", part / "lynaeydofd.mp4")
    os.symlink(shared_data / "videos" / "ffpp" / "004.mp4", part / "004.mp4")
    out = tmp_path / "run"
    summary = run_prepare(PrepareConfig(data=(str(part),), out=str(out), every=50, batch_size=8,
                                        video_timeout_s=30.0),
                          Faults(slow_videos=("004.mp4",), slow_seconds=3600))
    assert summary.batches == 1 and summary.errors == {"timeout": 1}
    error = pq.read_table(out / "prepare_errors").to_pylist()[0]
    assert error["video_id"] == "004.mp4" and "--video-timeout-s" in error["message"]
    crops = pq.read_table(out / "crops").to_pylist()
    assert crops and {r["video_id"] for r in crops} == {"lynaeydofd.mp4"}


def test_photos_are_real_faces_for_training_only(ray_session, shared_data, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    names = sorted(p.name for p in (shared_data / "faces" / "real_photos").glob("*.jpg"))[:6]
    for name in names:
        (photos / name).symlink_to(shared_data / "faces" / "real_photos" / name)
    out = tmp_path / "run"
    summary = run_prepare(PrepareConfig(data=(str(photos),), out=str(out), val_fraction=0.5))
    rows = pq.read_table(out / "crops").to_pylist()
    assert summary.crops == {"photo": len(rows)} and len(rows) >= 5
    assert {r["split"] for r in rows} == {"train"}  # no fake of them to validate on
    assert all(len(r["landmarks"]) == 144 and r["label"] == 0 for r in rows)


def test_without_a_subset_the_split_follows_the_identity_clusters(ffpp_crops, tmp_path):
    import pyarrow as pa

    from deepfake_lib.core.storage import RunDir
    from deepfake_lib.stages.cluster import CLUSTER_SCHEMA
    from deepfake_lib.stages.prepare import make_plan

    config, first = ffpp_crops
    assert first.split_by == {"video": 3} and "split by original video" in first.text()
    run = RunDir(str(tmp_path / "run"))
    plan, _ = make_plan(run, config)
    split = dict(zip(plan.column("video_id").to_pylist(), plan.column("split").to_pylist()))
    # two originals that the per-video split puts apart are one person in the clusters
    apart = next((a, b) for a in ("004.mp4", "519.mp4", "634.mp4")
                 for b in ("004.mp4", "519.mp4", "634.mp4") if split[a] != split[b])
    rows = [{"video_id": v, "frame_index": 0, "face_index": 0, "cluster": 7 if v in apart else 3,
             "pca_x": 0.0, "pca_y": 0.0, "tsne_x": 0.0, "tsne_y": 0.0}
            for v in ("004.mp4", "519.mp4", "634.mp4")]
    run.write_parquet("clusters.parquet", pa.Table.from_pylist(rows, CLUSTER_SCHEMA))
    plan, _ = make_plan(run, config)
    split = dict(zip(plan.column("video_id").to_pylist(), plan.column("split").to_pylist()))
    cluster = dict(zip(plan.column("video_id").to_pylist(), plan.column("cluster").to_pylist()))
    a, b = apart
    assert split[a] == split[b] and cluster[a] == cluster[b] == 7
    fakes = dict(zip(plan.column("video_id").to_pylist(), plan.column("fake_ids").to_pylist()))
    assert fakes == {"004.mp4": ["004_982.mp4"], "519.mp4": ["519_515.mp4"],
                     "634.mp4": ["634_660.mp4"]}  # a fake goes with its original


def test_splits_keep_groups_whole_and_have_both_sides():
    split = assign_splits([f"cluster:{i}" for i in range(50)] * 2, 0.2)
    assert set(split.values()) == {"train", "val"}
    assert 3 <= sum(v == "val" for v in split.values()) <= 20
    assert set(assign_splits(["cluster:1", "cluster:2"], 0.2).values()) == {"train", "val"}

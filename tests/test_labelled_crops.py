import csv
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from deepfake_lib.data import labelled_crops
from deepfake_lib.media import faces


def _dfdc_subset(shared_data, folder, families: int = 30) -> list[dict]:
    """A folder in dfdc_faces' layout with the crops of the first ``families`` families
    that have their original's crop, and of as many whose original is absent."""
    source = shared_data / "crops" / "dfdc_faces"
    rows = list(csv.DictReader(open(source / "metadata.csv")))
    reals = {r["video"] for r in rows if r["label"] == "REAL"}
    with_original = sorted({r["original"] for r in rows if r["original"] in reals})[:families]
    orphans = sorted({r["original"] for r in rows
                      if r["label"] == "FAKE" and r["original"] not in reals})[:families]
    chosen = set(with_original) | set(orphans)
    picked = [r for r in rows if (r["original"] or r["video"]) in chosen]
    for sub in ("real", "fake"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for r in picked:
        shutil.copy(source / r["file"], folder / r["file"])
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(picked)
    return picked


def test_labels_come_from_metadata_or_from_folders(shared_data, tmp_path):
    picked = _dfdc_subset(shared_data, tmp_path / "faces", families=5)
    table = labelled_crops.read_labels(str(tmp_path / "faces")).to_pylist()
    assert len(table) == len(picked)
    by_file = {r["sample_id"].split("/", 1)[1]: r for r in table}
    for r in picked:
        row = by_file[r["file"]]
        assert row["label"] == (r["label"] == "FAKE")
        assert row["family"] == (r["original"] or r["video"]).removesuffix(".mp4")
    # each family's stand-in: the original's crop where the folder has it, else a fake
    stand_ins = labelled_crops.family_stand_ins(labelled_crops.read_labels(
        str(tmp_path / "faces")))
    assert len(stand_ins) == len({r["family"] for r in table})
    has_real = {r["family"] for r in table if r["label"] == 0}
    for s in stand_ins:
        row = next(r for r in table if r["sample_id"] == s)
        assert row["label"] == (0 if row["family"] in has_real else 1)
    # without metadata.csv: GenConViT's <fake>_<original>_<k> names
    dev = labelled_crops.read_labels(str(shared_data / "crops" / "dfdc_dev")).to_pylist()
    fake = next(r for r in dev if r["label"] == 1)
    name = fake["sample_id"].rsplit("/", 1)[1]
    assert fake["video_id"] == name.split("_")[0] and fake["family"] == name.split("_")[1]


def test_bad_metadata_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metadata.csv").write_text("file,label\nx.jpg,REAL\ny.jpg,maybe\n")
    with pytest.raises(ValueError, match=r"metadata.csv line 3: label 'maybe'"):
        labelled_crops.read_labels(str(tmp_path / "a"))
    (tmp_path / "a" / "metadata.csv").write_text("name,label\nx.jpg,REAL\n")
    with pytest.raises(ValueError, match="no column file"):
        labelled_crops.read_labels(str(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="no labelled crop"):
        labelled_crops.read_labels(str(tmp_path / "b"))


def test_a_tight_crop_is_described_as_one_face(shared_data):
    folder = shared_data / "crops" / "dfdc_faces" / "real"
    image = faces.decode_image(sorted(folder.glob("*.jpg"))[0].read_bytes())
    found = labelled_crops.describe(image, encode=True, landmarks=True)
    points = np.reshape(found["landmarks"], (-1, 2))
    assert points.shape == (72, 2) and len(found["encoding"]) == 128
    assert (points >= -10).all() and (points <= 234).all()
    assert labelled_crops.describe(image, encode=False, landmarks=False)["encoding"] is None


@pytest.mark.ray
def test_prepare_splits_labelled_crops_by_family_and_person(ray_session, shared_data, tmp_path):
    from deepfake_lib.stages.prepare import PrepareConfig, run_prepare

    picked = _dfdc_subset(shared_data, tmp_path / "faces")
    config = PrepareConfig(data=(), labelled=(str(tmp_path / "faces"),), out=str(tmp_path / "run"),
                           val_fraction=0.3)
    summary = run_prepare(config)
    rows = pq.read_table(tmp_path / "run" / "crops").to_pylist()
    assert len(rows) == len(picked) and {r["kind"] for r in rows} == {"crop"}
    split_of, cluster_of = {}, {}
    for r in rows:
        # a family never straddles the split, and a person (cluster) neither
        assert split_of.setdefault(r["original_id"], r["split"]) == r["split"]
        if r["cluster"] >= 0:
            assert cluster_of.setdefault(r["cluster"], r["split"]) == r["split"]
        if r["label"]:
            assert r["mask"] == b"" and r["landmarks"] == []
        else:
            assert faces.decode_image(r["mask"]).max() == 0 and len(r["landmarks"]) == 144
        assert faces.decode_image(r["image"]).shape == (224, 224, 3)
    assert set(split_of.values()) == {"train", "val"}
    counts = summary.labelled
    assert counts["train"]["crops"] + counts["val"]["crops"] == len(picked)
    assert counts["train"]["families"] + counts["val"]["families"] == len(split_of)
    assert "labelled crops, val:" in summary.text()
    again = run_prepare(config)
    assert again.batches_skipped == again.batches


@pytest.mark.ray
def test_a_bad_crop_is_one_error_row(ray_session, shared_data, tmp_path):
    from deepfake_lib.stages.prepare import PrepareConfig, run_prepare

    _dfdc_subset(shared_data, tmp_path / "faces", families=4)
    (tmp_path / "faces" / "real" / "broken.jpg").write_bytes(b"not a jpeg")
    with open(tmp_path / "faces" / "metadata.csv", "a") as f:
        f.write("real/broken.jpg,REAL,broken.mp4,,100\n")
    summary = run_prepare(PrepareConfig(data=(), labelled=(str(tmp_path / "faces"),),
                                        out=str(tmp_path / "run")))
    errors = pq.read_table(tmp_path / "run" / "prepare_errors").to_pylist()
    assert [(e["video_id"], e["kind"]) for e in errors] == [("faces/real/broken.jpg",
                                                              "bad_image")]
    assert summary.errors == {"bad_image": 1} and summary.crops["crop"] > 10

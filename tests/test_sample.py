import numpy as np

from deepfake_lib.data.dataset import build_manifest
from deepfake_lib.data.sample import SampleConfig, load_photos, write_sample
from deepfake_lib.media import faces, video


def test_sample_is_a_dfdc_part_with_linked_fakes(sample_dir):
    m = build_manifest(str(sample_dir))
    rows = m.table.to_pylist()
    assert m.problems.num_rows == 0
    reals = {r["video_id"] for r in rows if r["label"] == "REAL"}
    fakes = [r for r in rows if r["label"] == "FAKE"]
    assert len(reals) == 8 and len(fakes) == 8
    assert all(f["original"] in reals for f in fakes)
    info = video.probe(rows[0]["path"])
    assert (info.frame_count, info.width, info.height) == (48, 320, 240)


def test_fake_differs_from_its_original_only_in_the_face_and_shows_the_donor(sample_dir):
    part = sample_dir / "sample_part_0"
    detector = faces.DlibDetector("hog")
    real = video.read_frames(str(part / "astronaut_1.mp4"), [20])[20]
    fake = video.read_frames(str(part / "astronaut_1_as_grace_hopper.mp4"), [20])[20]
    donor = video.read_frames(str(part / "grace_hopper_0.mp4"), [20])[20]

    box = detector.detect(real)[0].box
    top, right, bottom, left = faces.expand_box(box, 0.2, *real.shape[:2])
    changed = np.abs(real.astype(int) - fake.astype(int)).max(axis=2) > 25
    inside = changed[top:bottom, left:right].sum()
    assert changed.sum() > 500  # the face really changed
    assert inside / changed.sum() > 0.9  # and little else did

    enc = {name: faces.encode_faces(img, [detector.detect(img)[0].box])[0]
           for name, img in (("real", real), ("fake", fake), ("donor", donor))}
    assert np.linalg.norm(enc["fake"] - enc["donor"]) < np.linalg.norm(enc["fake"] - enc["real"])


def test_sample_from_a_folder_of_photos(shared_data, tmp_path):
    """One photo per player of the soccer set, plus a photo with no face, which is skipped."""
    import csv
    import shutil

    photos = tmp_path / "photos"
    photos.mkdir()
    firsts = {}
    with open(shared_data / "faces" / "soccer" / "identities.csv") as f:
        for row in csv.DictReader(f):
            firsts.setdefault(row["identity"], row["file"])
    for identity, name in list(firsts.items())[:3]:
        shutil.copy(shared_data / "faces" / "soccer" / name, photos / f"{identity}.jpg")
    import cv2
    import numpy as np

    cv2.imwrite(str(photos / "wall.png"), np.full((200, 200, 3), 90, np.uint8))
    part = write_sample(tmp_path / "out", load_photos(photos),
                        SampleConfig(videos_per_identity=1, frames=12))
    rows = build_manifest(str(part)).table.to_pylist()
    assert sorted(r["label"] for r in rows) == ["FAKE"] * 3 + ["REAL"] * 3
    assert not any("wall" in r["video_id"] for r in rows)

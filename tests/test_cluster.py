import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfake_lib.core.storage import RunDir
from deepfake_lib.data.dataset import build_manifest
from deepfake_lib.media import faces
from deepfake_lib.models.cluster_methods import adjusted_rand, synthetic_encodings
from deepfake_lib.stages.cluster import ClusterConfig, choose_subset, run_cluster
from deepfake_lib.stages.encode import ENCODING_SCHEMA, EncodeConfig, run_encode


@pytest.fixture(scope="module")
def soccer_run(ray_session, shared_data, tmp_path_factory):
    """Real encodings of the 129 soccer photos, made by the encode stage through Ray."""
    out = tmp_path_factory.mktemp("soccer") / "run"
    run_encode(EncodeConfig(data=(str(shared_data / "faces" / "soccer"),), out=str(out)))
    return out


@pytest.mark.ray
def test_soccer_players_are_found_without_parameters(soccer_run, shared_data):
    summary = run_cluster(ClusterConfig(out=str(soccer_run)))
    clusters = pq.read_table(soccer_run / "clusters.parquet").to_pandas()
    main = clusters[clusters.face_index == 0]
    truth = pd.read_csv(shared_data / "faces" / "soccer" / "identities.csv").set_index("file")
    ari = adjusted_rand(truth.loc[main.video_id, "identity"].tolist(), main.cluster.to_numpy())
    assert ari >= 0.95
    # five players, plus at most one cluster of the other people in the photos
    assert summary.clusters in (5, 6) and summary.faces == len(clusters)
    subset = pq.read_table(soccer_run / "subset.parquet").to_pandas()
    assert set(subset.cluster) == set(clusters.cluster) - {-1}
    assert len(set(subset.cluster)) == summary.clusters
    assert subset.groupby("cluster").size().max() <= 3


@pytest.mark.ray
def test_figures_are_images_that_show_faces(soccer_run):
    run_cluster(ClusterConfig(out=str(soccer_run)))
    figures = soccer_run / "figures"
    for name in ("frames.png", "pca_faces.png", "tsne_faces.png", "clusters.png"):
        image = faces.decode_image((figures / name).read_bytes())
        assert image.shape[0] > 300 and image.std() > 10, name
    montages = sorted((figures / "clusters").glob("cluster_*.png"))
    assert len(montages) == len(set(pq.read_table(soccer_run / "clusters.parquet")
                                    .column("cluster").to_pylist()) - {-1})
    montage = faces.decode_image(montages[0].read_bytes())
    assert montage.shape[1] == 960  # 10 faces of 96 px a row
    first_row = montage[:96]
    assert sum(bool(faces.get_face_detector("auto").detect(first_row[:, i * 96:(i + 1) * 96]))
               for i in range(10)) >= 7


def test_subset_takes_every_fake_of_its_reals_from_dfdc_metadata(shared_data, tmp_path):
    part = tmp_path / "train_sample_videos"
    part.mkdir()
    shutil.copy(shared_data / "dfdc" / "train_sample_videos_metadata.json", part / "metadata.json")
    manifest = build_manifest(str(tmp_path)).table
    reals = sorted(r["video_id"] for r in manifest.to_pylist() if r["label"] == "REAL")
    clusters_of = {vid: i % 10 for i, vid in enumerate(reals)}  # 77 reals, 10 people
    subset = choose_subset(clusters_of, manifest, per_cluster=2).to_pylist()
    chosen = {r["video_id"] for r in subset if r["label"] == "REAL"}
    assert len(chosen) == 20
    fakes_in_subset = {r["video_id"] for r in subset if r["label"] == "FAKE"}
    expected = {r["video_id"] for r in manifest.to_pylist()
                if r["label"] == "FAKE" and r["original"] in chosen}
    assert fakes_in_subset == expected and expected
    for r in subset:
        if r["label"] == "FAKE":
            assert r["cluster"] == clusters_of[r["original"]]


def _write_encodings(run: RunDir, x: np.ndarray, ids: list[str] | None = None) -> None:
    thumb = faces.encode_jpeg(np.full((96, 96, 3), 128, np.uint8))
    n = len(x)
    run.write_parquet("encodings/000000-a.parquet", pa.table({
        "video_id": ids or [f"v{i}.mp4" for i in range(n)], "part": ["p"] * n,
        "label": ["REAL"] * n,
        "original": [None] * n, "frame_index": [0] * n, "face_index": [0] * n, "top": [0] * n,
        "right": [10] * n, "bottom": [10] * n, "left": [0] * n, "det_score": [1.0] * n,
        "encoding": [row.tolist() for row in x], "thumb": [thumb] * n}, schema=ENCODING_SCHEMA))


def test_synthetic_dfdc_like_subset_keeps_the_people(tmp_path):
    x, truth = synthetic_encodings(60, 12, noise_fraction=0.0, seed=4)
    run = RunDir(str(tmp_path / "run"))
    _write_encodings(run, x)
    summary = run_cluster(ClusterConfig(out=run.location, figures=False))
    subset = run.read_parquet("subset.parquet").column("video_id").to_pylist()
    people = {int(truth[int(v[1:-4])]) for v in subset}
    assert len(people) >= 0.95 * 60
    assert summary.subset_reals <= 0.25 * len(x)


def test_the_cluster_job_takes_no_ray_address(tmp_path, capsys):
    from jobs.cluster import main

    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "run"), "--address", "auto"])
    assert exit_.value.code == 2 and "unrecognized arguments: --address" in capsys.readouterr().err


def test_a_new_persons_faces_leave_the_other_people_their_ids(tmp_path):
    x, truth = synthetic_encodings(7, 15, noise_fraction=0.0, seed=5)
    ids = [f"person{t}_{i:03d}.mp4" for i, t in enumerate(truth)]
    known = np.flatnonzero((truth < 6) & (np.arange(len(truth)) % 15 < 5))  # 5 faces of 6 people
    everyone = np.concatenate([known, np.flatnonzero(truth == 6)])  # and 15 faces of a 7th
    ids_of = {}
    for name, rows in (("before", known), ("after", everyone)):
        run = RunDir(str(tmp_path / name))
        _write_encodings(run, x[rows], [ids[i] for i in rows])
        run_cluster(ClusterConfig(out=run.location, figures=False))
        table = run.read_parquet("clusters.parquet").to_pylist()
        ids_of[name] = {r["video_id"]: r["cluster"] for r in table}
    before, after = ids_of["before"], ids_of["after"]
    assert len(set(before.values()) - {-1}) == 6 and len(set(after.values()) - {-1}) == 7
    assert {v: after[v] for v in before} == before  # the newcomer is the largest cluster
    newcomer = {after[ids[i]] for i in np.flatnonzero(truth == 6)}
    assert len(newcomer) == 1 and not newcomer & set(before.values())


def test_empty_and_one_face_runs_are_clear_errors(tmp_path, capsys):
    from jobs.cluster import main

    assert main(["--out", str(tmp_path / "empty")]) == 1
    assert "run jobs/encode.py first" in capsys.readouterr().err
    run = RunDir(str(tmp_path / "one"))
    _write_encodings(run, np.zeros((1, 128), np.float32))
    assert main(["--out", run.location]) == 1
    assert "at least 3" in capsys.readouterr().err


def test_other_settings_on_finished_clusters_are_refused_unless_overwrite(tmp_path, capsys):
    from jobs.cluster import main

    x, _ = synthetic_encodings(5, 8, noise_fraction=0.0, seed=6)
    run = RunDir(str(tmp_path / "run"))
    _write_encodings(run, x)
    assert main(["--out", run.location, "--no-figures"]) == 0
    before = run.read_bytes("subset.parquet")
    assert main(["--out", run.location, "--no-figures"]) == 0  # the same settings: fine
    assert main(["--out", run.location, "--no-figures", "--per-cluster", "1"]) == 1
    err = capsys.readouterr().err
    assert "per_cluster=3 then, 1 now" in err and "--overwrite" in err
    assert run.read_bytes("subset.parquet") == before  # nothing replaced
    assert main(["--out", run.location, "--no-figures", "--per-cluster", "1",
                 "--overwrite"]) == 0
    assert run.read_bytes("subset.parquet") != before

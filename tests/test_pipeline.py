import csv
import io
import json
import re

import boto3
import pyarrow as pa
import pytest

from deepfake_lib.pipeline import (PipelineConfig, board_line, held_out_videos, run_pipeline,
                                   write_builtin_sample)
from deepfake_lib.storage import RunDir



def _upload(folder, bucket, prefix):
    client = boto3.client("s3")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")


@pytest.mark.ray
def test_whole_pipeline_with_data_and_run_directory_on_s3(ray_session, sample_dir):
    """Every stage reads its inputs from and writes its run directory to s3:// (a real S3 API
    on loopback), through Ray tasks, actors and Train workers."""
    _upload(sample_dir, "data", "sample")
    out = "s3://runs/pipeline"
    run_pipeline(PipelineConfig(out=out, data=("s3://data/sample",), init_model=None,
                                image_size=64, epochs=1),
                 log=lambda _: None)
    run = RunDir(out)
    for stage in ("encode", "cluster", "prepare", "train", "score"):
        assert run.exists(f"{stage}.json"), stage
    assert run.read_parquet("encodings").num_rows == 8
    assert run.read_parquet("clusters.parquet").num_rows == 8
    assert run.read_parquet("crops").num_rows > 0
    assert run.exists("model/model.pt") and run.exists("figures/masks.png")
    # the board is on the people the model was not trained on: the validation split's videos
    crops = run.read_parquet("crops", columns=["video_id", "split"]).to_pylist()
    held_out = {c["video_id"] for c in crops if c["split"] == "val"}
    assert held_out and held_out.isdisjoint(c["video_id"] for c in crops if c["split"] == "train")
    rows = list(csv.DictReader(io.StringIO(run.read_bytes("submission.csv").decode())))
    assert [r["filename"] for r in rows] == sorted(held_out)
    board = json.loads(run.read_bytes("leaderboard.json"))
    assert board["data"] == "validation" and board["count"] == len(held_out) < 16
    assert board["statuses"] == {"ok": len(held_out)}
    page = run.read_bytes("report.html").decode()  # rewritten after each stage, on S3 too
    assert page.count("<td class='done'>done</td>") == 5 and "roc_calibration.png" in page

    before = {name: run.read_bytes(name) for name in
              ("encode.json", "cluster.json", "train.json", "score.json", "model/model.pt")}
    messages = []
    run_pipeline(PipelineConfig(out=out, data=("s3://data/sample",), init_model=None,
                                image_size=64, epochs=1),
                 log=messages.append)
    skipped = [m for m in messages if m.startswith("pipeline:") and "already done" in m]
    assert len(skipped) == 3  # cluster, train, score
    for stage in ("encode", "prepare"):
        summary = next(m for m in messages if m.startswith(f"{stage}:"))
        assert re.search(r"(\d+) batches \(\1 already done\)", summary), summary
    assert run.read_bytes("cluster.json") == before["cluster.json"]
    assert run.read_bytes("model/model.pt") == before["model/model.pt"]

    # other data (two of the videos) on a finished run: refused, the run left as it was
    part = sample_dir / "sample_part_0"
    metadata = json.loads((part / "metadata.json").read_text())
    kept = sorted(v for v, m in metadata.items() if m["label"] == "REAL")[:2]
    client = boto3.client("s3")
    for name in kept:
        client.upload_file(str(part / name), "data", f"other/part/{name}")
    client.put_object(Bucket="data", Key="other/part/metadata.json",
                      Body=json.dumps({v: metadata[v] for v in kept}).encode())
    with pytest.raises(ValueError, match="other inputs"):
        run_pipeline(PipelineConfig(out=out, data=("s3://data/other",), init_model=None,
                                    image_size=64, epochs=1), log=lambda _: None)
    # other training settings on a finished run: refused
    with pytest.raises(ValueError, match="epochs=1 then, 2 now"):
        run_pipeline(PipelineConfig(out=out, data=("s3://data/sample",), init_model=None,
                                    image_size=64, epochs=2), log=lambda _: None)
    assert run.read_bytes("model/model.pt") == before["model/model.pt"]


def test_the_builtin_sample_is_written_into_an_s3_run_directory(s3_endpoint):
    from deepfake_lib.sample import PART_NAME

    run = RunDir("s3://runs/with_sample")
    where = write_builtin_sample(run)
    assert where == "s3://runs/with_sample/sample_data"
    names = run.list(f"sample_data/{PART_NAME}")
    metadata = json.loads(run.read_bytes(f"sample_data/{PART_NAME}/metadata.json"))
    assert sorted(metadata) == sorted(n for n in names if n.endswith(".mp4")) and metadata
    assert write_builtin_sample(run) == where  # there already: not written again


def _crops(run: RunDir, splits: dict[str, str]) -> None:
    run.write_parquet("crops/000000-a.parquet", pa.table({
        "video_id": list(splits), "split": list(splits.values())}))


def test_held_out_videos_are_those_of_people_never_trained_on(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    _crops(run, {"a.mp4": "train", "b.mp4": "val", "c.mp4": "val", "d.mp4": "train"})
    assert held_out_videos(run) == ("b.mp4", "c.mp4")
    _crops(run, {"a.mp4": "train", "d.mp4": "train"})
    assert held_out_videos(run) == ()


def test_a_board_on_training_videos_says_so():
    line = board_line({"logloss": 0.1, "count": 16, "data": "train"})
    assert "TRAINING videos" in line and "no measure" in line and "logloss 0.1" in line
    assert board_line({"logloss": 0.1, "data": "validation"}).startswith(
        "leaderboard on validation videos")

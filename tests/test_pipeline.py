import csv
import io
import json

import boto3
import pyarrow as pa
import pytest

from deepfake_lib.pipeline import PipelineConfig, held_out_videos, run_pipeline
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
    run_pipeline(PipelineConfig(out=out, data=("s3://data/sample",), image_size=64, epochs=1),
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

    messages = []
    run_pipeline(PipelineConfig(out=out, data=("s3://data/sample",), image_size=64, epochs=1),
                 log=messages.append)
    assert sum("already done" in m for m in messages) == 5  # a second run skips every stage


def _crops(run: RunDir, splits: dict[str, str]) -> None:
    run.write_parquet("crops/000000-a.parquet", pa.table({
        "video_id": list(splits), "split": list(splits.values())}))


def test_held_out_videos_are_those_of_people_never_trained_on(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    _crops(run, {"a.mp4": "train", "b.mp4": "val", "c.mp4": "val", "d.mp4": "train"})
    assert held_out_videos(run) == ("b.mp4", "c.mp4")
    _crops(run, {"a.mp4": "train", "d.mp4": "train"})
    assert held_out_videos(run) == ()


def test_a_board_on_training_videos_says_so(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    for stage in ("encode", "cluster", "prepare", "train", "score"):
        run.write_json(f"{stage}.json", {})
    run.write_json("leaderboard.json", {"logloss": 0.1, "count": 16, "data": "train"})
    messages = []
    run_pipeline(PipelineConfig(out=run.location, data=("unused",)), log=messages.append)
    line = next(m for m in messages if m.startswith("leaderboard"))
    assert "TRAINING videos" in line and "no measure" in line

import csv
import io
import json

import boto3
import pytest

from deepfake_lib.pipeline import PipelineConfig, run_pipeline
from deepfake_lib.storage import RunDir

pytestmark = pytest.mark.ray


def _upload(folder, bucket, prefix):
    client = boto3.client("s3")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")


def test_whole_pipeline_with_data_and_run_directory_on_s3(ray_session, sample_dir):
    """Every stage reads its inputs from and writes its run directory to s3:// (a real S3 API
    on loopback), through Ray tasks, actors and Train workers."""
    _upload(sample_dir, "data", "sample")
    out = "s3://runs/pipeline"
    run_pipeline(PipelineConfig(out=out, data=("s3://data/sample",), encoder="resnet18",
                                image_size=64, epochs=1), log=lambda _: None)
    run = RunDir(out)
    for stage in ("encode", "cluster", "prepare", "train", "score"):
        assert run.exists(f"{stage}.json"), stage
    assert run.read_parquet("encodings").num_rows == 8
    assert run.read_parquet("clusters.parquet").num_rows == 8
    assert run.read_parquet("crops").num_rows > 0
    assert run.exists("model/model.pt") and run.exists("figures/masks.png")
    rows = list(csv.DictReader(io.StringIO(run.read_bytes("submission.csv").decode())))
    assert len(rows) == 16 and len({r["filename"] for r in rows}) == 16
    board = json.loads(run.read_bytes("leaderboard.json"))
    assert board["count"] == 16 and board["statuses"] == {"ok": 16}

    messages = []
    run_pipeline(PipelineConfig(out=out, data=("s3://data/sample",), encoder="resnet18",
                                image_size=64, epochs=1), log=messages.append)
    assert sum("already done" in m for m in messages) == 5  # a second run skips every stage

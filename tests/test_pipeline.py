import csv
import dataclasses
import io
import json
import re
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfake_lib.core.storage import RunDir
from deepfake_lib.pipeline import (
    PipelineConfig,
    board_line,
    held_out_videos,
    run_pipeline,
    write_builtin_sample,
)


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
    from deepfake_lib.data.sample import PART_NAME

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


@dataclasses.dataclass(frozen=True)
class _Settings:
    out: str
    overwrite: bool = False


def test_a_stage_whose_inputs_changed_is_redone_and_so_is_every_stage_after_it(
        tmp_path, monkeypatch):
    """Three stages on real records: ``a`` always runs (a batch stage) and writes what ``b``
    reads; ``c`` reads what ``b`` writes, which never changes."""
    from deepfake_lib import pipeline
    from deepfake_lib.core import records
    from deepfake_lib.stages import Stage

    run = RunDir(str(tmp_path / "run"))
    a_writes = {"text": "first"}
    ran: list[tuple[str, bool]] = []

    @dataclasses.dataclass
    class Done:
        succeeded: bool = True

        def text(self) -> str:
            return "done"

    def stage(name: str, writes: str, reads: str | None) -> Stage:
        def digest(r: RunDir, config) -> str:
            return records.digest(r.read_bytes(reads))

        def run_stage(config: _Settings) -> Done:
            ran.append((name, config.overwrite))
            inputs = digest(run, config) if reads else None
            run.write_bytes(writes, (a_writes["text"] if name == "a" else name).encode())
            records.write(run, name, config, inputs, Done())
            return Done()

        return Stage(name, _Settings, run_stage, writes=((writes, name),),
                     inputs=digest if reads else None)

    stages = (stage("a", "a.txt", None), stage("b", "b.txt", "a.txt"),
              stage("c", "c.txt", "b.txt"))
    monkeypatch.setattr(pipeline, "STAGES", stages)
    monkeypatch.setattr(pipeline, "stage_configs", lambda config, data: {
        s.name: lambda r, overwrite: _Settings(out=config.out, overwrite=overwrite)
        for s in stages})
    config = PipelineConfig(out=run.location, data=("videos",))
    logged: list[str] = []

    assert run_pipeline(config, log=logged.append).succeeded
    assert ran == [("a", False), ("b", False), ("c", False)]
    ran.clear()
    run_pipeline(config, log=logged.append)  # nothing changed: b and c are skipped
    assert ran == [("a", False)]
    assert any("pipeline: b already done" in line for line in logged)
    ran.clear()
    a_writes["text"] = "second"  # b's input changes; c's will not, but c comes after b
    run_pipeline(config, log=logged.append)
    assert ran == [("a", False), ("b", True), ("c", True)]
    assert any("the inputs of b changed" in line for line in logged)


@pytest.mark.ray
def test_a_real_run_in_which_nothing_succeeded_exits_1_and_stops_there(ray_session, tmp_path,
                                                                       capsys):
    from jobs.pipeline import main

    part = tmp_path / "data" / "dfdc_train_part_0"
    part.mkdir(parents=True)
    (part / "empty.mp4").write_bytes(b"")
    (part / "noise.mp4").write_bytes(bytes(range(256)) * 64)
    (part / "metadata.json").write_text(json.dumps(
        {"empty.mp4": {"label": "REAL"}, "noise.mp4": {"label": "REAL"}}))
    out = tmp_path / "run"
    assert main(["--out", str(out), "--data", str(tmp_path / "data")]) == 1
    printed = capsys.readouterr().out
    assert "encode: 2 videos, 0 with faces" in printed
    assert "pipeline: stopped after encode, which did nothing" in printed
    assert "pipeline: cluster" not in printed and not (out / "cluster.json").exists()
    kinds = {row["video_id"]: row["kind"] for row in pq.read_table(out / "errors").to_pylist()}
    assert kinds == {"empty.mp4": "empty", "noise.mp4": "not_video"}


@pytest.mark.ray
def test_with_nobody_held_out_every_video_is_scored_and_the_board_says_train(
        ffpp_crops, tiny_model, shared_data, tmp_path):
    import shutil

    from deepfake_lib.pipeline import stage_configs
    from deepfake_lib.stages.score import run_score

    config, _ = ffpp_crops
    out = tmp_path / "run"
    for part in (Path(config.out) / "crops").glob("*.parquet"):  # every person trained on
        table = pq.read_table(part)
        at = table.schema.get_field_index("split")
        (out / "crops").mkdir(parents=True, exist_ok=True)
        pq.write_table(table.set_column(at, "split", pa.array(["train"] * table.num_rows)),
                       out / "crops" / part.name)
    shutil.copytree(tiny_model, out / "model")
    data = (str(shared_data / "videos" / "ffpp"),)
    score = stage_configs(PipelineConfig(out=str(out), data=data), data)["score"](
        RunDir(str(out)), False)
    assert score.videos == () and score.data_name == "train"
    run_score(dataclasses.replace(score, frames=8))
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["data"] == "train" and board["count"] == 6  # every labelled video
    assert "TRAINING videos" in board_line(board)

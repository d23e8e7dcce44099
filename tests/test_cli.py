from pathlib import Path

import pytest
import yaml

from deepfake_lib.execution.resources import (
    autoscaled_node_types,
    local_paths_problem,
    room_for,
)

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_room_counts_units_that_fit_one_node_each():
    laptop = [{"CPU": 2.0, "memory": 8e9}]
    assert room_for(laptop, [], cpus=1, gpus=1, count=1) == 0  # no GPU anywhere
    assert room_for(laptop, [], cpus=64, gpus=0, count=1) == 0  # no node that big
    assert room_for(laptop, [], cpus=1, gpus=0, count=3) == 2
    assert room_for(laptop + [{"CPU": 1.0}], [], cpus=2, gpus=0, count=2) == 1  # not split
    assert room_for([{"CPU": 1.0, "GPU": 1.0}], [], cpus=0.1, gpus=0.1, count=20) == 10


def test_a_launcher_cluster_counts_the_nodes_its_autoscaler_may_add(tmp_path):
    # what `ray up cluster.yaml` leaves on the head: each node type's resources filled in
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    types = config["available_node_types"]
    types["cpu_spot"]["resources"] = {"CPU": 16}
    types["gpu"]["resources"] = {"CPU": 8, "GPU": 1}
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(config))
    addable = autoscaled_node_types(str(path))
    head_only = [{"CPU": 0.0}]  # no worker up yet
    assert room_for(head_only, [], cpus=1, gpus=1, count=1) == 0
    assert room_for(head_only, addable, cpus=1, gpus=1, count=4) == 4  # up to 8 GPU nodes
    assert room_for(head_only, addable, cpus=1, gpus=1, count=9) == 8
    assert room_for(head_only, addable, cpus=1, gpus=2, count=1) == 0  # no 2-GPU node type


def test_unknown_autoscaling_refuses_nothing_and_no_autoscaler_adds_nothing(tmp_path):
    assert autoscaled_node_types(str(CLUSTER_YAML)) is None  # resources left to the launcher
    assert autoscaled_node_types(str(tmp_path / "absent.yaml")) == []


def test_local_paths_are_refused_on_more_than_one_node_only():
    paths = ["s3://bucket/run", "/data/dfdc"]
    assert local_paths_problem(paths, nodes=1, may_grow=False) is None  # a laptop
    assert local_paths_problem(["s3://bucket/run"], nodes=3, may_grow=True) is None
    problem = local_paths_problem(paths, nodes=3, may_grow=False)
    assert "/data/dfdc is a local path" in problem and "3 nodes" in problem
    assert "s3://" in problem and "--shared-fs" in problem
    assert "may add more" in local_paths_problem(paths, nodes=1, may_grow=True)


def _did_nothing(out: str) -> dict:
    """Each job's stage function and a summary of a run in which nothing succeeded."""
    from deepfake_lib.pipeline import PipelineSummary
    from deepfake_lib.stages.cluster import ClusterSummary
    from deepfake_lib.stages.encode import EncodeSummary
    from deepfake_lib.stages.prepare import PrepareSummary
    from deepfake_lib.stages.score import ScoreSummary

    return {
        "encode": ("run_encode", EncodeSummary(out, videos=3, errors={"corrupt": 3})),
        "cluster": ("run_cluster", ClusterSummary(out, faces=12, noise=12, reals=4)),
        "prepare": ("run_prepare", PrepareSummary(out, units=2, errors={"corrupt": 2})),
        "score": ("run_score", ScoreSummary(out, videos=3, statuses={"error": 2, "no_face": 1})),
        "pipeline": ("run_pipeline", PipelineSummary(out, 1.0, stopped_after="score")),
    }


JOB_ARGS = {"encode": ["--data", "videos"], "cluster": [], "prepare": ["--data", "videos"],
            "score": ["--data", "videos"], "pipeline": []}


@pytest.mark.parametrize("job", sorted(JOB_ARGS))
def test_a_job_in_which_nothing_succeeded_exits_1(job, tmp_path, monkeypatch, capsys):
    import importlib

    from deepfake_lib import cli

    module = importlib.import_module(f"jobs.{job}")
    stage, summary = _did_nothing(str(tmp_path))[job]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "videos").mkdir()
    monkeypatch.setattr(cli, "init_ray", lambda *args, **kwargs: None)
    monkeypatch.setattr(module, stage, lambda config: summary)
    assert module.main(JOB_ARGS[job] + ["--out", str(tmp_path)]) == 1
    assert capsys.readouterr().out.strip() == summary.text()  # the summary says what failed


def test_one_video_scored_is_success():
    from deepfake_lib.stages.score import ScoreSummary

    assert ScoreSummary("run", videos=3, statuses={"partial": 1, "error": 2}).succeeded
    assert not ScoreSummary("run", videos=3, statuses={"timeout": 1, "error": 2}).succeeded


def test_the_pipeline_stops_after_a_stage_that_did_nothing(tmp_path, monkeypatch):
    from deepfake_lib import pipeline
    from deepfake_lib.stages import Stage
    from deepfake_lib.stages.cluster import ClusterSummary
    from deepfake_lib.stages.encode import EncodeSummary

    out = str(tmp_path / "run")

    def stage(name, summary):
        return Stage(name, object, lambda config: summary(), writes=())

    stages = (stage("encode", lambda: EncodeSummary(out, videos=2, encoded=2, faces=2)),
              stage("cluster", lambda: ClusterSummary(out, faces=2, noise=2, reals=2)),
              stage("prepare", lambda: pytest.fail("prepare ran on an empty subset")))
    monkeypatch.setattr(pipeline, "STAGES", stages)
    monkeypatch.setattr(pipeline, "stage_configs", lambda config, data: {
        s.name: lambda run, overwrite: None for s in stages})
    messages = []
    summary = pipeline.run_pipeline(pipeline.PipelineConfig(out=out, data=("videos",)),
                                    log=messages.append)
    assert not summary.succeeded and summary.stopped_after == "cluster"
    assert "stopped after cluster" in summary.text()
    assert stages[1].run(None).text() in messages


@pytest.mark.parametrize("overwrite,again", [(False, "rerun the same command:"),
                                             (True, "rerun the same command without "
                                                    "--overwrite:")])
def test_ctrl_c_says_where_the_run_stands_and_how_to_resume(overwrite, again, tmp_path, capsys):
    from deepfake_lib.cli import run_job
    from deepfake_lib.stages.encode import EncodeConfig

    def interrupted(config):
        raise KeyboardInterrupt

    (tmp_path / "videos").mkdir()
    config = EncodeConfig(data=(str(tmp_path / "videos"),), out=str(tmp_path / "run"),
                          overwrite=overwrite)
    assert run_job("encode", interrupted, config, connection=None) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"what was finished is in {tmp_path / 'run'}" in err and again in err


@pytest.mark.parametrize("job", ["encode", "cluster", "score"])
def test_a_run_directory_that_cannot_be_written_is_one_line_before_ray_starts(
        job, tmp_path, monkeypatch, capsys):
    import importlib

    from deepfake_lib import cli

    (tmp_path / "a_file").write_text("in the way")
    monkeypatch.setattr(cli, "init_ray", lambda *args, **kwargs: pytest.fail(
        "Ray started for a run it cannot write"))
    out = str(tmp_path / "a_file" / "run")
    assert importlib.import_module(f"jobs.{job}").main(JOB_ARGS[job] + ["--out", out]) == 1
    err = capsys.readouterr().err
    assert err == f"{job}: cannot write to the run directory {out}: " + err.split(": ", 2)[2]
    assert err.count("\n") == 1 and "Not a directory" in err


def test_a_bucket_that_does_not_exist_is_one_line(s3_endpoint, capsys):
    from jobs.cluster import main

    assert main(["--out", "s3://no-such-bucket/run1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cluster: cannot write to the run directory s3://no-such-bucket/run1: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize("case", ["missing", "file", "same_as_out"])
def test_data_that_cannot_be_the_input_is_one_line_before_ray_starts(case, tmp_path, monkeypatch,
                                                                    capsys):
    from deepfake_lib import cli
    from jobs.encode import main

    data = tmp_path / "videos"
    if case == "file":
        data.write_text("not a folder")
    elif case == "same_as_out":
        data.mkdir()
    monkeypatch.setattr(cli, "init_ray",
                        lambda *args, **kwargs: pytest.fail("Ray started for data it cannot read"))
    out = data if case == "same_as_out" else tmp_path / "run"
    assert main(["--data", str(data), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    expected = {"missing": "does not exist", "file": "is a file, not a folder",
                "same_as_out": "is also a --data folder"}[case]
    assert expected in err and err.count("\n") == 1


def test_a_ray_address_that_does_not_answer_is_one_line_in_bounded_time(tmp_path, monkeypatch,
                                                                      capsys):
    import time

    import ray

    from jobs.score import main

    (tmp_path / "videos").mkdir()
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the suite's own Ray is up
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing listens on port 1
    start = time.monotonic()
    assert main(["--data", str(tmp_path / "videos"), "--out", str(tmp_path / "run"),
                 "--connect-timeout-s", "5"]) == 1
    assert time.monotonic() - start < 60  # a hang guard: Ray alone waits for minutes
    err = capsys.readouterr().err
    assert err.startswith("score: no Ray answers at 127.0.0.1:1 (from $RAY_ADDRESS) within 5 s")
    assert err.count("\n") == 1

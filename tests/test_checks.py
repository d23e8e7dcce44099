"""Bad flag values: refused in the config dataclasses, one line and exit code 2 from every job,
before anything starts; the allowed values are in --help."""

import importlib
import re

import pytest

from deepfake_lib.execution.resources import Resources
from deepfake_lib.models.cluster_methods import ClusterParams
from deepfake_lib.models.detector import ModelConfig
from deepfake_lib.stages.encode import EncodeConfig
from deepfake_lib.stages.score import ScoreConfig

JOBS = ("encode", "cluster", "prepare", "train", "score", "pipeline")
DATA_OUT = ["--data", "videos", "--out", "run"]

BAD = [  # job, flags, the message
    ("score", DATA_OUT + ["--actors", "-1"], "--actors -1: must be >= 1"),
    ("encode", DATA_OUT + ["--max-in-flight", "-1"], "--max-in-flight -1: must be >= 1"),
    ("encode", DATA_OUT + ["--batch-size", "0"], "--batch-size 0: must be >= 1"),
    ("encode", DATA_OUT + ["--batch-size", "-1"], "--batch-size -1: must be >= 1"),
    ("prepare", DATA_OUT + ["--batch-size", "0"], "--batch-size 0: must be >= 1"),
    ("score", DATA_OUT + ["--batch-size", "0"], "--batch-size 0: must be >= 1"),
    ("encode", DATA_OUT + ["--tries", "0"], "--tries 0: must be >= 1"),
    ("encode", DATA_OUT + ["--cpus-per-task", "0"], "--cpus-per-task 0.0: must be > 0"),
    ("score", DATA_OUT + ["--frames", "0"], "--frames 0: must be >= 1"),
    ("score", DATA_OUT + ["--clip", "0"], "--clip 0.0: must be in (0, 0.5)"),
    ("score", DATA_OUT + ["--clip", "0.5"], "--clip 0.5: must be in (0, 0.5)"),
    ("score", DATA_OUT + ["--fallback", "1.5"], "--fallback 1.5: must be in [0, 1]"),
    ("score", DATA_OUT + ["--fallback", "-0.1"], "--fallback -0.1: must be in [0, 1]"),
    ("score", DATA_OUT + ["--budget-s", "nan"], "--budget-s nan: must be > 0"),
    ("score", DATA_OUT + ["--budget-s", "inf"], "--budget-s inf: must be > 0"),
    ("score", DATA_OUT + ["--model", ""], "--model '': must be a local path or s3:// URI"),
    ("encode", ["--data", "", "--out", "run"], "--data '': must be a local path or s3:// URI"),
    ("encode", ["--data", "videos", "--out", ""], "--out '': must be a local path or s3:// URI"),
    ("score", ["--data", "videos", "--out", " "], "--out ' ': must be a local path"),
    ("cluster", ["--out", ""], "--out '': must be a local path or s3:// URI"),
    ("cluster", ["--out", "run", "--eps", "0"], "--eps 0.0: must be > 0"),
    ("cluster", ["--out", "run", "--min-cluster-size", "1"], "--min-cluster-size 1: must be >= 2"),
    ("cluster", ["--out", "run", "--per-cluster", "0"], "--per-cluster 0: must be >= 1"),
    ("cluster", ["--out", "run", "--seed", "-1"], "--seed -1: must be in [0, 4294967295]"),
    ("prepare", DATA_OUT + ["--every", "0"], "--every 0: must be >= 1"),
    ("prepare", DATA_OUT + ["--val-fraction", "1"], "--val-fraction 1.0: must be in [0, 1)"),
    ("prepare", DATA_OUT + ["--margin", "-0.1"], "--margin -0.1: must be >= 0"),
    ("train", ["--out", "run", "--workers", "0"], "--workers 0: must be >= 1"),
    ("train", ["--out", "run", "--epochs", "0"], "--epochs 0: must be >= 1"),
    ("train", ["--out", "run", "--lr", "-1"], "--lr -1.0: must be > 0"),
    ("train", ["--out", "run", "--image-size", "0"], "--image-size 0: must be >= 1"),
    ("train", ["--out", "run", "--encoder-weights", ""],
     "--encoder-weights '': must be imagenet, none or a weights file, not empty"),
    ("train", ["--out", "run", "--val-data", "crops", ""], "--val-data '': must be"),
    ("pipeline", ["--out", ""], "--out '': must be a local path or s3:// URI"),
    ("pipeline", ["--out", "run", "--data", ""], "--data '': must be a local path"),
    ("pipeline", ["--out", "run", "--workers", "0"], "--workers 0: must be >= 1"),
    ("score", DATA_OUT + ["--connect-timeout-s", "0"], "--connect-timeout-s 0.0: must be > 0"),
    ("train", ["--out", "run", "--connect-timeout-s", "nan"],
     "--connect-timeout-s nan: must be > 0"),
]


@pytest.mark.parametrize("job,argv,message", BAD)
def test_a_bad_flag_is_one_line_and_exit_code_2_before_anything_starts(job, argv, message,
                                                                       monkeypatch, capsys):
    module = importlib.import_module(f"jobs.{job}")
    monkeypatch.setattr(module, "run_job", lambda *a, **k: pytest.fail("the stage started"))
    with pytest.raises(SystemExit) as exited:
        module.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f": error: {message}" in err, err


def _options(help_text: str) -> dict[str, str]:
    """``{--flag: its help}`` of the flags that take a value."""
    blocks = re.split(r"\n  (?=-)", help_text.split("options:", 1)[1])
    return {b.split()[0]: b for b in blocks if re.match(r"--[\w-]+ \[?[A-Z_]", b)}


NOT_CHECKED = {"--detector", "--method", "--aggregation", "--mask-method", "--arch", "--encoder",
               "--address"}  # choices, names and the Ray address: not numbers or paths


@pytest.mark.parametrize("job", JOBS)
def test_every_number_and_path_flag_shows_what_is_allowed(job, capsys):
    with pytest.raises(SystemExit):
        importlib.import_module(f"jobs.{job}").main(["--help"])
    options = _options(capsys.readouterr().out)
    assert "--out" in options
    for flag, text in options.items():
        if flag not in NOT_CHECKED:
            assert "(allowed: " in text or "(not empty)" in text, text


def test_the_configs_refuse_what_the_flags_refuse():
    """The rules live in the configs, so a config made in code is checked too."""
    with pytest.raises(ValueError, match="--max-in-flight 0: must be >= 1"):
        Resources("task", count=0)
    with pytest.raises(ValueError, match="--cpus-per-actor 0: must be > 0"):
        Resources("actor", cpus=0)
    with pytest.raises(ValueError, match="--memory-gb-per-task 0: must be > 0"):
        Resources("task", memory_gb=0)
    with pytest.raises(ValueError, match="actors 2: must be a Resources"):
        ScoreConfig(data=(), out="run", actors=2)
    with pytest.raises(ValueError, match="retries -1: must be >= 0"):  # no flag: named as a field
        EncodeConfig(data=(), out="run", retries=-1)
    with pytest.raises(ValueError, match="--eps 0: must be > 0"):  # 0 was taken as "the knee"
        ClusterParams(eps=0)
    with pytest.raises(ValueError, match="temperature 0.0: must be > 0"):
        ModelConfig(temperature=0.0)
    with pytest.raises(ValueError, match="--data ''"):
        ScoreConfig(data=("videos", ""), out="run")
    # None: the stage's own default
    ScoreConfig(data=(), out="run", actors=Resources("actor", cpus=None), model=None)

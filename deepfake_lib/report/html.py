"""``RUN/report.html``: one page that says what a run did, what went wrong, how good the model
is and where every output lives. Every job rewrites it when its stage finishes
(:func:`deepfake_lib.cli.run_job`), the pipeline after each stage.

The page is self-contained: styles inline, every image embedded as a data URI (figures as
JPEG at most :data:`EMBED_PX` wide, each linked to its full-size file beside the page), no
script, nothing fetched. Sections: each stage's record (``RUN/<stage>.json``: summary and
settings); the leaderboard with its ROC and calibration figure; the labelled videos the model
got most confidently wrong, each with its picture (:func:`deepfake_lib.media.pictures.picture`:
classified frames, face boxes, the detector's mask of altered pixels); errors by kind with
their first rows (``manifest_problems.parquet``, ``errors/``, ``prepare_errors/``, the
statuses of ``scores/``); the figures; the outputs and where they are.

A picture costs the model and about a second a video to draw (:data:`STRIP` frames, faces
found on each: :func:`deepfake_lib.media.pictures.sample_frames`), so the pictures are kept in
``RUN/report/`` under names that say the video and the model (the score stage's record's
digest of it) and drawn only when missing; pictures of videos no longer shown are deleted.
A rewrite reads records, errors and scores and embeds the figures: under a second for 1,000
videos (``benchmarks/report.py``).
"""

from __future__ import annotations

import base64
import html
import json
import posixpath
import sys
import time

import cv2
import numpy as np
import pyarrow.fs as pafs

from deepfake_lib.core import records, storage
from deepfake_lib.core.progress import format_seconds
from deepfake_lib.core.storage import RunDir
from deepfake_lib.stages import STAGES

EMBED_PX = 1200       # widest embedded figure, px
FIRST_ROWS = 3        # rows shown per error kind
WRONG = 3             # most confidently wrong videos shown with pictures
STRIP = 4             # frames in each of their pictures
MONTAGES = 6          # cluster montages embedded (all are linked)
PICTURES = "report"   # RUN/report/: the pictures, drawn once

# (path in RUN, what it holds); a folder ends with "/"
OUTPUTS = (("report.html", "this page"),) + tuple(
    (path, f"{what} ({stage.name})") for stage in STAGES for path, what in stage.writes) + (
    ("figures/", "the figures, full size"),
    ("report/", "pictures of the videos this page shows"),
) + tuple((f"{stage.name}.json", f"what the {stage.name} stage ran with, and its summary")
          for stage in STAGES)

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 24px auto; max-width: 1240px;
       padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 2px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ccc;
        padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; } figure { margin: 12px 0; }
.done { color: #176f2c; } .open { color: #a15c00; } .none { color: #888; }
.row { display: flex; gap: 20px; align-items: flex-start; }
code { background: #f4f4f4; padding: 1px 4px; } .small { color: #666; font-size: 12px; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _value(value: object) -> str:
    """A summary value for people."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items()) or "none"
    return str(value)


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{_e(_value(v))}</td>' if isinstance(v, (int, float)) else
        f"<td>{_e(_value(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(data: bytes, mime: str, alt: str) -> str:
    return (f'<img alt="{_e(alt)}" src="data:{mime};base64,'
            f'{base64.b64encode(data).decode()}">')


def embeddable(data: bytes, width: int = EMBED_PX, quality: int = 85) -> bytes:
    """An image file's bytes as a JPEG at most ``width`` pixels wide."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not an image")
    if image.shape[1] > width:
        image = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])),
                           interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _figure(run: RunDir, rel: str, caption: str, width: int = EMBED_PX) -> str:
    try:
        image = _img(embeddable(run.read_bytes(rel), width), "image/jpeg", caption)
    except (OSError, ValueError) as exc:
        return f'<p class="open">{_e(rel)}: cannot be shown ({_e(exc)})</p>'
    return (f'<figure>{image}<figcaption><a href="{_e(rel)}">{_e(rel)}</a>: {_e(caption)}'
            "</figcaption></figure>")


def _names(run: RunDir) -> set[str]:
    """The names directly in the run directory (one listing; folders end with ``/``)."""
    fs, path = storage.resolve(run.location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return set()
    return {posixpath.basename(i.path) + ("/" if i.type == pafs.FileType.Directory else "")
            for i in fs.get_file_info(pafs.FileSelector(path))}


def _stages(stage_records: dict[str, dict | None]) -> str:
    """One row per stage: its state, time, summary and (folded) settings."""
    rows = []
    for stage in (s.name for s in STAGES):
        record = stage_records.get(stage)
        if record is None:
            rows.append(f"<tr><td>{stage}</td><td class='none'>not run</td><td></td><td></td>"
                        "</tr>")
            continue
        summary = dict(record.get("summary") or {})
        state = ("<td class='done'>done</td>" if record.get("summary") else
                 "<td class='open'>started, not finished (running, or stopped)</td>")
        seconds = summary.pop("seconds", None)
        for shown_elsewhere in ("out", "model_dir", "leaderboard"):
            summary.pop(shown_elsewhere, None)
        text = "; ".join(f"{k.replace('_', ' ')}: {_value(v)}" for k, v in summary.items())
        settings = _e(json.dumps(record.get("config"), indent=1, default=str))
        rows.append(f"<tr><td><b>{stage}</b></td>{state}<td class='num'>"
                    f"{format_seconds(seconds) if seconds is not None else ''}</td>"
                    f"<td>{_e(text)}<details><summary class='small'>settings</summary>"
                    f"<pre>{settings}</pre></details></td></tr>")
    return ("<table><tr><th>stage</th><th>state</th><th>time</th><th>summary</th></tr>"
            + "".join(rows) + "</table>")


def _first_rows(rows: list[dict]) -> str:
    return "<br>".join(f"{_e(r['video_id'] or '(folder)')}: {_e(r['message'])}"
                       for r in rows[:FIRST_ROWS])


def _error_section(run: RunDir, names: set[str], scores: list[dict]) -> str:
    """Errors of every stage by kind, with the first rows of each kind."""
    sources: list[tuple[str, str, list[dict]]] = []
    if "manifest_problems.parquet" in names:
        sources.append(("problems in the data", "manifest_problems.parquet",
                        run.read_parquet("manifest_problems.parquet").to_pylist()))
    for folder, what in (("errors", "encode errors"), ("prepare_errors", "prepare errors")):
        if f"{folder}/" in names and run.list(folder, ".parquet"):
            sources.append((what, f"{folder}/", run.read_parquet(
                folder, columns=["video_id", "kind", "message"]).to_pylist()))
    if scores:
        sources.append(("score statuses other than ok", "scores/",
                        [{"video_id": r["video_id"], "kind": r["status"],
                          "message": r["message"]} for r in scores if r["status"] != "ok"]))
    out = []
    for what, where, rows in sources:
        out.append(f"<h3>{_e(what)} <span class='small'><code>{_e(run.uri(where))}</code>"
                   "</span></h3>")
        by_kind: dict[str, list[dict]] = {}
        for row in rows:
            by_kind.setdefault(row["kind"], []).append(row)
        if not by_kind:
            out.append("<p class='done'>none</p>")
            continue
        body = "".join(f"<tr><td>{_e(kind)}</td><td class='num'>{len(found)}</td>"
                       f"<td>{_first_rows(found)}</td></tr>"
                       for kind, found in sorted(by_kind.items(), key=lambda kv: -len(kv[1])))
        out.append(f"<table><tr><th>kind</th><th>videos</th><th>first {FIRST_ROWS}</th></tr>"
                   f"{body}</table>")
    return "".join(out) or "<p class='none'>no stage has reported errors yet</p>"


def _leaderboard(run: RunDir, names: set[str]) -> str:
    if "leaderboard.json" not in names:
        return "<p class='none'>no leaderboard yet: the score stage writes it when it scores " \
               "labelled videos</p>"
    board = run.read_json("leaderboard.json")
    note = ("<p class='open'>on TRAINING videos: the model has seen these people; this is no "
            "measure of how it does on new people</p>" if board.get("data") == "train" else "")
    figure = (_figure(run, "figures/roc_calibration.png", "ROC and calibration of the "
                      "labelled videos", 900) if run.exists("figures/roc_calibration.png") else "")
    return (note + "<div class='row'>" + _table(["measure", "value"], list(board.items()))
            + f"<div>{figure}</div></div>")


def most_wrong(scores: list[dict], count: int = WRONG) -> list[dict]:
    """The labelled videos the model got most confidently wrong (scored ``ok`` or
    ``partial`` on the wrong side of 0.5), the furthest from their label first."""
    wrong = [r for r in scores if r["label"] is not None and r["status"] in ("ok", "partial")
             and abs(r["label"] - r["prob"]) > 0.5]
    return sorted(wrong, key=lambda r: (-abs(r["label"] - r["prob"]), r["video_id"]))[:count]


def _draw(run: RunDir, rows: list[dict], score: dict, names: dict[str, str]
          ) -> dict[str, bytes | str]:
    """Draw the pictures of ``rows`` (score rows) with the score stage's model (``score``: its
    record's config), keep them as ``names``; ``{video_id: JPEG bytes, or why there is
    none}``."""
    from deepfake_lib.data.dataset import build_manifest  # noqa: PLC0415
    from deepfake_lib.media import faces, video  # noqa: PLC0415 - torch and the detector: only to draw
    from deepfake_lib.media.pictures import picture, sample_frames  # noqa: PLC0415
    from deepfake_lib.models.detector import load_model  # noqa: PLC0415

    try:
        manifest = build_manifest(list(score.get("data") or ()), exclude=[run.location]).table
        wanted = {r["video_id"] for r in rows}
        paths = {v: p for v, p in zip(manifest.column("video_id").to_pylist(),
                                      manifest.column("path").to_pylist()) if v in wanted}
        model = load_model(score.get("model") or run.uri("model"), device="cpu")
        detector = faces.get_face_detector(model.config.face_detector, "cpu")
    except (OSError, ValueError, RuntimeError) as exc:
        return {r["video_id"]: f"no picture: {exc}" for r in rows}
    out: dict[str, bytes | str] = {}
    for row in rows:
        video_id = row["video_id"]
        if video_id not in paths:
            out[video_id] = "no picture: the video is no longer where the score stage found it"
            continue
        try:
            with storage.local_copy(paths[video_id]) as local:
                frames, tracks = sample_frames(local, detector, STRIP)
        except (video.VideoError, OSError) as exc:
            out[video_id] = f"no picture: {exc}"
            continue
        title = (f"{video_id}: {'FAKE' if row['label'] else 'REAL'}, scored P(fake) "
                 f"{row['prob']:.2f}")
        out[video_id] = embeddable(picture(frames, tracks, model, title, STRIP,
                                           score.get("max_tracks", 4)))
        run.write_bytes(names[video_id], out[video_id])
    return out


def pictures(run: RunDir, rows: list[dict], score: dict) -> dict[str, bytes | str]:
    """``{video_id: JPEG, or why there is none}`` for ``rows``: kept ones read, missing ones
    drawn (:func:`_draw`), those of other videos or models deleted."""
    model = (score.get("inputs") or "model")[:12]
    names = {r["video_id"]: f"{PICTURES}/{r['video_id']}.{model}.jpg" for r in rows}
    have = set(run.list(PICTURES))
    missing = [r for r in rows if posixpath.basename(names[r["video_id"]]) not in have]
    out = _draw(run, missing, score.get("config") or {}, names) if missing else {}
    for row in rows:
        if row["video_id"] not in out:
            out[row["video_id"]] = run.read_bytes(names[row["video_id"]])
    for stale in have - {posixpath.basename(n) for n in names.values()}:
        run.delete(f"{PICTURES}/{stale}")
    return out


def _wrong_section(run: RunDir, scores: list[dict], score: dict | None) -> str:
    wrong = most_wrong(scores)
    if not wrong or score is None:
        return ("<p class='none'>none: no labelled video scored on the wrong side of 0.5</p>"
                if scores else "<p class='none'>nothing scored yet</p>")
    drawn = pictures(run, wrong, score)
    text = _table(["video", "label", "P(fake)", "status"],
                  [[r["video_id"], "FAKE" if r["label"] else "REAL", r["prob"], r["status"]]
                   for r in wrong])
    for row in wrong:
        shown = drawn[row["video_id"]]
        text += (_img(shown, "image/jpeg", f"picture of {row['video_id']}")
                 if isinstance(shown, bytes) else f"<p class='open'>{_e(row['video_id'])}: "
                 f"{_e(shown)}</p>")
    return text


FIGURES = {
    "frames.png": "frames sampled from the videos (cluster)",
    "pca_faces.png": "face thumbnails at their PCA coordinates, framed in their person's colour",
    "tsne_faces.png": "face thumbnails at their t-SNE coordinates",
    "clusters.png": "the identity clusters on t-SNE, noise in black",
    "masks.png": "rows of real | fake | mask of altered pixels (prepare)",
}


def _figures(run: RunDir) -> str:
    names = [n for n in run.list("figures", ".png") if n != "roc_calibration.png"]
    text = "".join(_figure(run, f"figures/{n}", FIGURES.get(n, n)) for n in names)
    montages = run.list("figures/clusters", ".png")
    if montages:
        text += (f"<h3>people ({len(montages)} clusters; the first {min(MONTAGES, len(montages))}"
                 f" shown, all in <code>{_e(run.uri('figures/clusters'))}</code>)</h3>")
        text += "".join(_figure(run, f"figures/clusters/{n}", n, 360)
                        for n in montages[:MONTAGES])
    return text or "<p class='none'>no figures yet</p>"


def _outputs(run: RunDir, names: set[str]) -> str:
    rows = [f"<tr><td><a href='{_e(rel)}'><code>{_e(run.uri(rel))}</code></a></td>"
            f"<td>{_e(what)}</td></tr>" for rel, what in OUTPUTS if rel in names]
    return f"<table><tr><th>where</th><th>what</th></tr>{''.join(rows)}</table>"


def report_html(run: RunDir) -> str:
    """The page of ``run`` (see the module's docstring)."""
    names = _names(run)
    stage_records = {s.name: records.read(run, s.name) for s in STAGES
                     if f"{s.name}.json" in names}
    scores = []
    if "scores/" in names and run.list("scores", ".parquet"):
        scores = run.read_parquet("scores", columns=["video_id", "prob", "status", "message",
                                                     "label"]).to_pylist()
    sections = (
        ("stages", "Stages", _stages(stage_records)),
        ("leaderboard", "Leaderboard", _leaderboard(run, names)),
        ("wrong", "Most confidently wrong videos", _wrong_section(
            run, scores, stage_records.get("score"))),
        ("errors", "Errors and problems, by kind", _error_section(run, names, scores)),
        ("figures", "Figures", _figures(run)),
        ("outputs", "Where each output lives", _outputs(run, names | {"report.html"})),
    )
    nav = " · ".join(f"<a href='#{key}'>{_e(title)}</a>" for key, title, _ in sections)
    body = "".join(f"<h2 id='{key}'>{_e(title)}</h2>{text}" for key, title, text in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>deepfake_lib run report: {_e(run.location)}</title>"
            f"<style>{STYLE}</style></head><body><h1>Run report</h1>"
            f"<p>run directory <code>{_e(run.location)}</code>; written "
            f"{_e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p><p>{nav}</p>{body}</body></html>")


def write_report(out: str) -> str | None:
    """Write ``RUN/report.html`` for the run directory ``out``; return where it is, or None
    (nothing written) when ``out`` holds no stage record, so is no run directory."""
    run = RunDir(out)
    if not any(f"{s.name}.json" in _names(run) for s in STAGES):
        return None
    run.write_bytes("report.html", report_html(run).encode())
    return run.uri("report.html")


def try_write_report(out: str) -> str | None:
    """:func:`write_report`, except that a failure is printed (to stderr) and gives None: the
    report never undoes the work of a stage that finished. An older report is then removed,
    so none is left that reads as current."""
    try:
        return write_report(out)
    except Exception as exc:  # noqa: BLE001 - a by-product: the stage's outputs stand
        run = RunDir(out)
        try:
            removed = "; the older report.html was removed" if run.exists("report.html") else ""
            run.delete("report.html")
        except OSError:
            removed = f"; the older {run.uri('report.html')} is out of date"
        print(f"report: not written ({type(exc).__name__}: {exc}){removed}", file=sys.stderr)
        return None

import os
import subprocess
import sys
import tempfile
from fractions import Fraction

import av
import numpy as np
import pytest

from deepfake_lib.data.sample import write_video
from deepfake_lib.media import video


def _sequential(path):
    return [frame for _, frame in video.iter_frames(str(path))]


def test_probe_exact_and_near_random_reads_on_every_shared_video(shared_videos):
    rng = np.random.default_rng(0)
    assert len(shared_videos) == 11
    moved = 0  # near reads that gave the frame before: the one asked for was never decoded
    for path in shared_videos:
        info = video.probe(str(path))
        frames = _sequential(path)
        assert info.frame_count == len(frames), path.name
        assert (info.height, info.width, 3) == frames[0].shape
        assert 20 < info.fps < 31 and info.rotation == 0
        # spread over the video: small gaps are decoded through, large ones seek
        wanted = sorted(rng.choice(len(frames), size=6, replace=False).tolist()) + [len(frames) - 1]
        got = video.read_frames(str(path), reversed(wanted))
        assert sorted(got) == sorted(set(wanted))
        for i in wanted:
            assert np.array_equal(got[i], frames[i]), f"{path.name} frame {i}"
        # the nearest frame that others are predicted from: the one asked for or the one before
        near = video.read_frames_near(str(path), wanted)
        assert sorted(near) == sorted(set(wanted))
        for i in wanted:
            assert any(np.array_equal(near[i], frames[j]) for j in (i, i - 1)), \
                f"{path.name} frame {i}"
            moved += not np.array_equal(near[i], frames[i])
    assert moved >= 10, moved  # 30 here; 0 if every frame were decoded


def test_portrait_dfdc_video_is_upright(shared_data):
    info = video.probe(str(shared_data / "videos" / "dfdc" / "brtujopkby.mp4"))
    assert (info.width, info.height) == (1080, 1920)
    assert info.duration_s == pytest.approx(10.0, abs=0.1)


def test_read_every_second(shared_data):
    path = str(shared_data / "videos" / "dfdc" / "lynaeydofd.mp4")
    frames = video.read_every(path, 1.0)
    assert sorted(frames) == [round(k * 29.97) for k in range(10)]
    assert list(video.read_every(path, 2.5, limit=2)) == [0, 75]


def test_rotation_metadata_is_applied(tmp_path):
    path = tmp_path / "rotated.mp4"
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :8] = 255  # a white stripe on the left
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(90)
        for _ in range(5):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    info = video.probe(str(path))
    assert (info.width, info.height, info.rotation) == (48, 64, 270)
    for read in (video.read_frames, video.read_frames_near):
        upright = read(str(path), [2])[2]
        assert upright.shape == (64, 48, 3)
        # the stripe is now at the bottom
        assert upright[-4:].mean() > 200 and upright[:4].mean() < 50, read.__name__


def test_near_reads_of_a_video_that_pauses_fall_back_to_exact_frames(tmp_path):
    """Time stamps with a 1-s gap: no decoded frame lies near frame 33 though decoding went
    past it, which is no damage; the exact frame is read instead."""
    path = str(tmp_path / "pause.mp4")
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(90):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 2 * i, np.uint8), "rgb24")
            frame.pts, frame.time_base = i + (30 if i >= 30 else 0), Fraction(1, 30)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    exact = video.read_frames(path, [33])[33]
    assert np.array_equal(video.read_frames_near(path, [33])[33], exact)


def test_bad_inputs_raise_one_typed_error(bad_inputs):
    folder, expected = bad_inputs
    for name, kind in expected.items():
        for read in (video.read_frames, video.read_frames_near):
            with pytest.raises(video.VideoError) as err:
                read(str(folder / name), [0])
            assert err.value.kind == kind, (name, read.__name__)
            assert name in str(err.value)
    with pytest.raises(video.VideoError) as err:
        video.probe(str(folder / "absent.mp4"))
    assert err.value.kind == "missing"


def test_file_cut_short_after_its_index(tmp_path):
    """A fast-start MP4 (index first) cut short opens, then fails at the first missing frame."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(60)]
    path = tmp_path / "faststart.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert video.probe(str(cut)).frame_count == 60
    for read in (video.read_frames, video.read_frames_near):
        assert 0 in read(str(cut), [0])
        with pytest.raises(video.VideoError) as err:
            read(str(cut), [59])
        assert err.value.kind == "truncated", read.__name__


def test_unreadable_file_as_an_unprivileged_user(shared_data):
    folder = tempfile.mkdtemp()
    try:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "locked.mp4")
        with open(shared_data / "videos" / "ffpp" / "004.mp4", "rb") as src, \
                open(path, "wb") as dst:
            dst.write(src.read(4096))
        os.chmod(path, 0)
        code = ("from deepfake_lib.media import video\n"
                "try:\n video.probe(%r)\nexcept video.VideoError as e:\n print(e.kind)" % path)
        command = [sys.executable, "-c", code]
        if os.geteuid() == 0:  # root reads any file: the probe runs as nobody
            command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        out = subprocess.run(command, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=60)
        assert out.stdout.strip() == "permission", out.stderr
    finally:
        os.chmod(path, 0o644)
        os.remove(path)
        os.rmdir(folder)


def test_photo_is_a_one_frame_video(shared_data):
    path = str(shared_data / "faces" / "soccer" / "00000000.jpg")
    info = video.probe(path)
    assert info.frame_count == 1
    frame = video.read_frames(path, [0])[0]
    assert frame.shape == (info.height, info.width, 3)
    with pytest.raises(video.VideoError):
        video.read_frames(path, [1])


def test_written_video_reads_back(tmp_path):
    frames = [np.full((32, 48, 3), (10 * i, 100, 200 - 10 * i), np.uint8) for i in range(10)]
    write_video(tmp_path / "v.mp4", frames, 12.0)
    info = video.probe(str(tmp_path / "v.mp4"))
    assert (info.frame_count, info.width, info.height, info.fps) == (10, 48, 32, 12.0)
    back = video.read_frames(str(tmp_path / "v.mp4"), [3])[3]
    assert np.abs(back.astype(int) - frames[3]).mean() < 4

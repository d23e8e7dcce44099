"""Shared fixtures: the real data in ../shared/data, a corpus of bad inputs, one Ray instance."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from deepfake_lib.data.sample import SHARED_DATA_ENV, shared_data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing pretrained file fails at once
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "videos").is_dir():
        if os.environ.get("CI"):
            raise RuntimeError(f"shared test data not found at {path} (set {SHARED_DATA_ENV})")
        pytest.skip(f"shared test data not found at {path} (set {SHARED_DATA_ENV})")
    return path


@pytest.fixture(scope="session")
def shared_videos(shared_data) -> list[Path]:
    return sorted((shared_data / "videos").glob("*/*.mp4"))


def _mp4_with_random_box(data: bytes, box_type: bytes) -> bytes:
    """``data`` (an MP4) with the payload of its top-level ``box_type`` box replaced by random
    bytes: every box is whole, the file is damaged inside, not cut short."""
    offset = 0
    while offset < len(data):
        size = struct.unpack(">I", data[offset:offset + 4])[0]
        if data[offset + 4:offset + 8] == box_type:
            return data[:offset + 8] + os.urandom(size - 8) + data[offset + size:]
        offset += size
    raise ValueError(f"no {box_type!r} box")


def make_bad_inputs(folder: Path, good_video: Path) -> dict[str, str]:
    """Write a corpus of bad inputs into ``folder``; return ``{file name: expected error kind}``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good_video.read_bytes()
    (folder / "zero_bytes.mp4").write_bytes(b"")
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (folder / "text.mp4").write_text("this is not a video, just text with a video's name\n")
    (folder / "random_bytes.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    (folder / "random_mdat.mp4").write_bytes(_mp4_with_random_box(data, b"mdat"))
    (folder / "random_moov.mp4").write_bytes(_mp4_with_random_box(data, b"moov"))
    (folder / "directory.mp4").mkdir(exist_ok=True)
    (folder / "not_an_image.jpg").write_text("no JPEG here")
    return {"zero_bytes.mp4": "empty", "truncated.mp4": "truncated", "text.mp4": "not_video",
            "random_bytes.mp4": "corrupt", "random_mdat.mp4": "corrupt",
            "random_moov.mp4": "corrupt", "directory.mp4": "not_a_file",
            "not_an_image.jpg": "corrupt"}


@pytest.fixture
def bad_inputs(tmp_path, shared_data) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "bad"
    return folder, make_bad_inputs(folder, shared_data / "videos" / "ffpp" / "004.mp4")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The built-in sample, written once per test session."""
    from deepfake_lib.data.sample import write_sample

    root = tmp_path_factory.mktemp("sample")
    write_sample(root)
    return root


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API on loopback (moto's server) with buckets ``data`` and ``runs``. Its
    address and test credentials are in the environment, which Ray's workers inherit."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"})
    client = boto3.client("s3", endpoint_url=endpoint)
    for bucket in ("data", "runs"):
        client.create_bucket(Bucket=bucket)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def ray_session(s3_endpoint):
    """One local Ray for the whole test session (each start costs seconds); its workers see
    the S3 endpoint."""
    import ray

    if not ray.is_initialized():
        env = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "NO_ALBUMENTATIONS_UPDATE",
                                          "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                          "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
        # address="local": never join a Ray that something else left running
        ray.init(address="local", num_cpus=2, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ffpp_crops(ray_session, shared_data, tmp_path_factory):
    """The prepare stage run once on the FF++ pairs (every 25th frame): a run directory with
    crops/ for the prepare, train and score tests."""
    from deepfake_lib.stages.prepare import PrepareConfig, run_prepare

    out = tmp_path_factory.mktemp("ffpp") / "run"
    config = PrepareConfig(data=(str(shared_data / "videos" / "ffpp"),), out=str(out), every=25)
    return config, run_prepare(config)


@pytest.fixture(scope="session")
def tiny_model(ffpp_crops, tmp_path_factory) -> Path:
    """A tiny detector (ResNet-18 U-Net, 64 px, one epoch) trained on the FF++ crops."""
    import shutil

    from deepfake_lib.execution.resources import Resources
    from deepfake_lib.models.detector import ModelConfig
    from deepfake_lib.stages.train import TrainConfig, run_train

    config, _ = ffpp_crops
    out = tmp_path_factory.mktemp("tiny") / "run"
    shutil.copytree(Path(config.out) / "crops", out / "crops")
    run_train(TrainConfig(out=str(out), workers=Resources("worker", count=1), epochs=1,
                          batch_size=16,
                          model=ModelConfig(encoder="resnet18", encoder_weights="none",
                                            image_size=64)))
    return out / "model"

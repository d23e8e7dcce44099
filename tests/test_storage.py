import os

import pyarrow as pa
import pytest

from deepfake_lib.core import storage
from deepfake_lib.core.storage import RunDir


def _exercise(run: RunDir) -> None:
    table = pa.table({"video_id": ["a.mp4", "b.mp4"], "n": [1, 2]})
    assert not run.exists("encodings/batch-0.parquet")
    run.write_parquet("encodings/batch-0.parquet", table)
    run.write_parquet("encodings/batch-1.parquet", pa.table({"video_id": ["c.mp4"], "n": [3]}))
    run.write_json("summary.json", {"videos": 3})
    assert run.exists("encodings/batch-0.parquet")
    assert run.list("encodings", ".parquet") == ["batch-0.parquet", "batch-1.parquet"]
    assert run.read_parquet("encodings/batch-0.parquet").equals(table)
    both = run.read_parquet("encodings")
    assert both.column("video_id").to_pylist() == ["a.mp4", "b.mp4", "c.mp4"]
    assert run.read_json("summary.json") == {"videos": 3}
    # rewriting a name replaces it: a retried task cannot duplicate rows
    run.write_parquet("encodings/batch-0.parquet", table.slice(0, 1))
    assert run.read_parquet("encodings").num_rows == 2
    run.delete("encodings")
    assert run.list("encodings") == []
    with pytest.raises(FileNotFoundError):
        run.read_parquet("encodings")


def test_local_run_dir(tmp_path):
    _exercise(RunDir(str(tmp_path / "run")))


def test_s3_run_dir(s3_endpoint):
    _exercise(RunDir("s3://runs/test-run"))


def test_s3_through_ray_workers(ray_session):
    """A Ray task writes to S3 and the driver reads it: workers reach the same storage."""
    @ray_session.remote
    def write(run: RunDir) -> str:
        run.write_parquet("from_worker.parquet", pa.table({"pid": [os.getpid()]}))
        return run.location

    run = RunDir("s3://runs/from-workers")
    ray_session.get(write.remote(run))
    assert run.read_parquet("from_worker.parquet").column("pid")[0].as_py() != os.getpid()


def test_failed_local_write_leaves_no_temporary_file(tmp_path):
    run = RunDir(str(tmp_path))
    (tmp_path / "x.bin").mkdir()
    (tmp_path / "x.bin" / "keep").write_bytes(b"old")
    with pytest.raises(OSError):
        run.write_bytes("x.bin", b"new")  # the final rename fails: a folder is in the way
    assert sorted(os.listdir(tmp_path)) == ["x.bin"]
    assert (tmp_path / "x.bin" / "keep").read_bytes() == b"old"


def test_list_hides_files_being_written(tmp_path):
    run = RunDir(str(tmp_path))
    run.write_bytes("d/a.parquet", b"1")
    (tmp_path / "d" / "b.parquet.tmp-123").write_bytes(b"partial")
    assert run.list("d", ".parquet") == ["a.parquet"]


def test_local_copy_of_s3_object(s3_endpoint):
    storage.write_bytes_atomic("s3://runs/v/clip.mp4", b"video bytes")
    with storage.local_copy("s3://runs/v/clip.mp4") as path:
        assert path.endswith(".mp4")
        assert open(path, "rb").read() == b"video bytes"
    assert not os.path.exists(path)


@pytest.mark.parametrize("where", ["a_file", "a_file/run", "/sys/deepfake_lib_run"])
def test_a_run_directory_that_cannot_be_written_is_a_clear_error(where, tmp_path):
    """A regular file in the way, or a file system that refuses writes even to root (sysfs)."""
    (tmp_path / "a_file").write_text("in the way")
    location = str(tmp_path / where)
    with pytest.raises(OSError, match=f"^cannot write to the run directory {location}: "):
        RunDir(location).check_writable()


def test_a_bucket_that_does_not_exist_is_a_clear_error(s3_endpoint):
    with pytest.raises(OSError, match="^cannot write to the run directory s3://no-such-bucket/"
                                      "run1: .*no-such-bucket"):
        RunDir("s3://no-such-bucket/run1").check_writable()


@pytest.mark.parametrize("location", ["local", "s3://runs/probed"])
def test_the_write_probe_leaves_nothing_behind(location, tmp_path, request):
    if location.startswith("s3://"):
        request.getfixturevalue("s3_endpoint")
    run = RunDir(str(tmp_path / location) if location == "local" else location)
    run.check_writable()
    assert run.list("") == []


def test_a_long_legal_name_is_written_whatever_the_temporary_name(tmp_path):
    run = RunDir(str(tmp_path))
    name = "v" * 250 + ".png"  # 254 bytes: legal, with no room for a suffix
    run.write_bytes(name, b"picture")
    assert run.read_bytes(name) == b"picture"
    assert os.listdir(tmp_path) == [name]  # no temporary file left behind


def test_damaged_files_of_a_run_directory_are_named_with_the_way_out(tmp_path):
    run = RunDir(str(tmp_path))
    run.write_parquet("crops/a.parquet", pa.table({"x": [1]}))
    (tmp_path / "crops" / "b.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(ValueError, match=r"crops/b.parquet is damaged .*--overwrite"):
        run.read_parquet("crops")
    with pytest.raises(ValueError, match=r"crops/b.parquet is damaged"):
        run.parquet_file("crops/b.parquet")
    with pytest.raises(ValueError, match=r"crops/a.parquet is damaged .*No match for"):
        run.read_parquet("crops/a.parquet", columns=["y"])
    (tmp_path / "train.json").write_text('{"config": {"epochs": 2')
    with pytest.raises(ValueError, match=r"train.json is damaged .*--overwrite"):
        run.read_json("train.json")

import pyarrow as pa
import pytest

from deepfake_lib.core.storage import RunDir
from deepfake_lib.execution import batches


def _table(parts: dict[str, list[str]]) -> pa.Table:
    rows = [{"part": p, "video_id": v} for p, ids in sorted(parts.items()) for v in sorted(ids)]
    return pa.Table.from_pylist(rows)


def _plan(parts, size=8):
    return batches.plan(_table(parts), size, group="part")


def _ids(planned):
    return {name: rows.column("video_id").to_pylist() for name, rows in planned}


def test_batches_are_sized_near_batch_size_and_stay_within_a_part():
    parts = {f"part_{p}": [f"{p}_{i:05d}.mp4" for i in range(2000)] for p in range(3)}
    planned = _plan(parts)
    sizes = [rows.num_rows for _, rows in planned]
    assert max(sizes) <= 16 and 6 <= sum(sizes) / len(sizes) <= 9
    assert all(len(set(rows.column("part").to_pylist())) == 1 for _, rows in planned)
    assert sorted(v for ids in _ids(planned).values() for v in ids) == sorted(
        v for ids in parts.values() for v in ids)
    assert len({n for n, _ in planned}) == len(planned)


def test_a_video_added_or_removed_renames_only_the_batches_around_it():
    parts = {"part_0": [f"{i:05d}.mp4" for i in range(0, 4000, 2)],
             "part_1": [f"b{i:05d}.mp4" for i in range(500)]}
    before = set(_ids(_plan(parts)))
    renamed = []
    for k in range(100):
        grown = {**parts, "part_0": parts["part_0"] + [f"{k * 38 + 1:05d}.mp4"]}
        shrunk = {**parts, "part_0": parts["part_0"][:k * 19] + parts["part_0"][k * 19 + 1:]}
        renamed += [len(before - set(_ids(_plan(grown)))),
                    len(before - set(_ids(_plan(shrunk))))]
    assert max(renamed) <= 5 and sum(renamed) / len(renamed) < 1.6  # of about 320 batches
    # a new part leaves every batch of the others as it was
    assert before <= set(_ids(_plan({**parts, "part_2": ["c.mp4", "d.mp4"]})))


def _finish(run: RunDir, planned, names=None):
    for name, rows in planned:
        if names is None or name in names:
            run.write_parquet(f"results/{name}.parquet", rows)


def test_grown_data_keeps_finished_batches_and_redoes_only_the_superseded(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    parts = {"part_0": [f"{i:04d}.mp4" for i in range(0, 400, 2)]}
    first = _plan(parts)
    assert batches.done_batches(run, "stage", "results", first, False, ("results",)) == set()
    _finish(run, first)
    grown = _plan({"part_0": parts["part_0"] + ["0101.mp4"]})
    done = batches.done_batches(run, "stage", "results", grown, False, ("results",))
    todo = {n for n, _ in grown} - done
    assert 1 <= len(todo) <= 2 and "0101.mp4" in [v for n in todo for v in _ids(grown)[n]]
    # the superseded batch's file is gone, so no video is counted twice
    on_disk = run.read_parquet("results").column("video_id").to_pylist()
    assert len(on_disk) == len(set(on_disk)) == 200 - sum(len(_ids(grown)[n]) for n in todo) + 1


def test_results_of_other_inputs_are_refused_until_overwrite(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    first = _plan({"part_0": ["a.mp4", "b.mp4", "c.mp4"]}, size=2)
    batches.done_batches(run, "stage", "results", first, False, ("results",))
    _finish(run, first)
    other = _plan({"part_0": ["a.mp4", "x.mp4"]}, size=2)
    with pytest.raises(ValueError, match="other inputs.*--overwrite"):
        batches.done_batches(run, "stage", "results", other, False, ("results",))
    assert len(run.list("results", ".parquet")) == len(first)  # nothing was deleted
    assert batches.done_batches(run, "stage", "results", other, True, ("results",)) == set()
    assert run.list("results", ".parquet") == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_pending_is_what_done_batches_leaves_to_do(overwrite, tmp_path):
    """Read before the tidying (the score stage sizes its pool on it): the batches that
    done_batches then leaves to do, with grown data superseding a batch, with overwrite too."""
    run = RunDir(str(tmp_path / "run"))
    videos = [f"{i:04d}.mp4" for i in range(0, 60, 2)]
    first = _plan({"part_0": videos}, size=4)
    batches.done_batches(run, "stage", "results", first, False, ("results",))
    _finish(run, first[:-2])  # all but the last two batches finished
    grown = _plan({"part_0": videos + ["0001.mp4"]}, size=4)
    pending = {name for name, _ in batches.pending(run, "results", grown, overwrite)}
    done = batches.done_batches(run, "stage", "results", grown, overwrite, ("results",))
    assert pending == {name for name, _ in grown} - done
    if overwrite:
        assert pending == {name for name, _ in grown}
    else:
        assert 2 <= len(pending) < len(grown)

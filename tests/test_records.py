import json
from dataclasses import replace

import pytest

from deepfake_lib.core import records
from deepfake_lib.core.storage import RunDir


@pytest.mark.parametrize("text,what", [
    ('{"settings": {"epochs": 2', "Expecting"),                   # cut short
    ('[1, 2]', "a JSON list, not an object"),                      # a list
    ('{"config": {}, "settings": [1], "inputs": null}', "'settings' is list"),  # another shape
    ('{"config": {}, "settings": {}, "inputs": 3}', "'inputs' is int"),
])
def test_a_damaged_stage_record_is_named_with_the_way_out(tmp_path, text, what):
    run = RunDir(str(tmp_path))
    (tmp_path / "train.json").write_text(text)
    with pytest.raises(ValueError, match="train.json is damaged") as caught:
        records.read(run, "train")
    assert what in str(caught.value) and "--overwrite" in str(caught.value)


def test_a_sound_record_reads_back(tmp_path):
    run = RunDir(str(tmp_path))
    from deepfake_lib.stages.cluster import ClusterConfig

    records.write(run, "cluster", ClusterConfig(out=str(tmp_path)), "abc")
    assert records.read(run, "cluster")["inputs"] == "abc"
    assert json.loads((tmp_path / "cluster.json").read_text())["summary"] is None


def test_a_job_on_a_damaged_record_says_so_in_one_line(tmp_path, capsys):
    from jobs.cluster import main

    (tmp_path / "cluster.json").write_text("[]")
    assert main(["--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cluster: ") and "cluster.json is damaged" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def _written_by_an_earlier_version(run: RunDir, stage: str, *dropped: tuple[str, ...]) -> None:
    """Rewrite ``RUN/<stage>.json`` as a version without the settings ``dropped`` would have."""
    record = records.read(run, stage)
    for path in dropped:
        *parents, name = path
        nested = record["settings"]
        for parent in parents:
            nested = nested[parent]
        del nested[name]
    run.write_json(f"{stage}.json", record)


def test_a_setting_added_since_a_record_was_written_counts_as_what_earlier_versions_did(
        tmp_path):
    from deepfake_lib.models.detector import ModelConfig
    from deepfake_lib.stages.train import TrainConfig, TrainSummary

    run = RunDir(str(tmp_path))
    # before blend_share (its default is the earlier plan) and flip_average (earlier models
    # scored single crops, so a record without it stands for False, not its default True)
    earlier = TrainConfig(out=str(tmp_path), model=ModelConfig(flip_average=False))
    records.write(run, "train", earlier, "abc", TrainSummary(str(tmp_path / "model"), 1, 0))
    _written_by_an_earlier_version(run, "train", ("blend_share",), ("model", "flip_average"))

    records.check_settings(run, "train", earlier, overwrite=False, inputs="abc")
    assert records.is_finished(run, "train", earlier, "abc")
    for changed in (replace(earlier, blend_share=0.5), replace(earlier, model=ModelConfig())):
        assert not records.is_finished(run, "train", changed, "abc")
        with pytest.raises(ValueError, match="other settings"):
            records.check_settings(run, "train", changed, overwrite=False, inputs="abc")

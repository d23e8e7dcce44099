from pathlib import Path

import yaml

from deepfake_lib.runtime import autoscaled_node_types, local_paths_problem, room_for

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_room_counts_units_that_fit_one_node_each():
    laptop = [{"CPU": 2.0, "memory": 8e9}]
    assert room_for(laptop, [], cpus=1, gpus=1, count=1) == 0  # no GPU anywhere
    assert room_for(laptop, [], cpus=64, gpus=0, count=1) == 0  # no node that big
    assert room_for(laptop, [], cpus=1, gpus=0, count=3) == 2
    assert room_for(laptop + [{"CPU": 1.0}], [], cpus=2, gpus=0, count=2) == 1  # not split
    assert room_for([{"CPU": 1.0, "GPU": 1.0}], [], cpus=0.1, gpus=0.1, count=20) == 10


def test_a_launcher_cluster_counts_the_nodes_its_autoscaler_may_add(tmp_path):
    # what `ray up cluster.yaml` leaves on the head: each node type's resources filled in
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    types = config["available_node_types"]
    types["cpu_spot"]["resources"] = {"CPU": 16}
    types["gpu"]["resources"] = {"CPU": 8, "GPU": 1}
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(config))
    addable = autoscaled_node_types(str(path))
    head_only = [{"CPU": 0.0}]  # no worker up yet
    assert room_for(head_only, [], cpus=1, gpus=1, count=1) == 0
    assert room_for(head_only, addable, cpus=1, gpus=1, count=4) == 4  # up to 8 GPU nodes
    assert room_for(head_only, addable, cpus=1, gpus=1, count=9) == 8
    assert room_for(head_only, addable, cpus=1, gpus=2, count=1) == 0  # no 2-GPU node type


def test_unknown_autoscaling_refuses_nothing_and_no_autoscaler_adds_nothing(tmp_path):
    assert autoscaled_node_types(str(CLUSTER_YAML)) is None  # resources left to the launcher
    assert autoscaled_node_types(str(tmp_path / "absent.yaml")) == []


def test_local_paths_are_refused_on_more_than_one_node_only():
    paths = ["s3://bucket/run", "/data/dfdc"]
    assert local_paths_problem(paths, nodes=1, may_grow=False) is None  # a laptop
    assert local_paths_problem(["s3://bucket/run"], nodes=3, may_grow=True) is None
    problem = local_paths_problem(paths, nodes=3, may_grow=False)
    assert "/data/dfdc is a local path" in problem and "3 nodes" in problem
    assert "s3://" in problem and "--shared-fs" in problem
    assert "may add more" in local_paths_problem(paths, nodes=1, may_grow=True)

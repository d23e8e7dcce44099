from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_passes_rays_schema():
    config = prepare_config(yaml.safe_load(CONFIG.read_text()))  # defaults, as `ray up` does
    validate_config(config)  # raises on anything Ray's launcher would reject


def test_cluster_yaml_has_the_node_types_the_stages_need():
    config = yaml.safe_load(CONFIG.read_text())
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert "--num-cpus=0" in " ".join(config["head_start_ray_commands"])
    assert types["cpu_spot"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "gpu" in types["gpu"]["docker"]["worker_image"]
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.0-py311")
    for node in types.values():
        assert "IamInstanceProfile" in node["node_config"]  # workers read S3 too
    assert config["file_mounts"] == {"~/deepfake_lib": "."}
    assert config["setup_commands"] == ["cd ~/deepfake_lib && ./install.sh --system"]

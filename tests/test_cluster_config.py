"""cluster.yaml: Ray's launcher takes it, it has the node types the stages need, and the Ray it
starts lets in only who holds the cluster's token."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[1] / "cluster.yaml"
RAY = Path(sys.executable).with_name("ray")
CONTAINER_HOME = "/home/ray"  # HOME in the rayproject/ray images that cluster.yaml runs


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
    assert config["file_mounts"]["~/deepfake_lib"] == "."
    assert config["setup_commands"] == ["cd ~/deepfake_lib && ./install.sh --system"]


def _container_env(config: dict) -> dict[str, str]:
    """The variables that cluster.yaml's `docker run` options set in every node's container."""
    env = {}
    for option in config["docker"]["run_options"]:
        flag, _, assignment = option.partition(" ")
        if flag in ("-e", "--env"):
            name, _, value = assignment.partition("=")
            env[name] = value
    return env


def test_cluster_yaml_ships_the_users_token_and_keeps_the_dashboard_local():
    config = yaml.safe_load(CONFIG.read_text())
    env = _container_env(config)
    assert env["RAY_AUTH_MODE"] == "token"
    mounts = {remote.replace("~", CONTAINER_HOME, 1): local
              for remote, local in config["file_mounts"].items()}
    # where `ray get-auth-token --generate` writes it: outside the repository
    assert mounts[env["RAY_AUTH_TOKEN_PATH"]] == "~/.ray/auth_token"
    assert "--dashboard-host" not in " ".join(config["head_start_ray_commands"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(command: str, flags: dict[str, str | None]) -> list[str]:
    """The `ray start` of a cluster.yaml start command, with this Python's `ray`, ``flags``
    set or, where None, dropped (what differs on one machine: ports, temporary directory)."""
    start = next(part for part in command.split(";") if part.split()[:2] == ["ray", "start"])
    kept = [arg for arg in shlex.split(start)[2:] if arg.split("=")[0] not in flags]
    return [str(RAY), "start", *kept, *(f"{k}={v}" for k, v in flags.items() if v is not None)]


def _node_env(home: Path, config_env: dict[str, str] | None = None) -> dict[str, str]:
    """A fresh node's environment: this one without any Ray setting, its own HOME (so none of
    this machine's tokens), and ``config_env`` with the container's home moved to ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({k: v.replace(CONTAINER_HOME, str(home)) for k, v in (config_env or {}).items()})
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    return env


def _head_start(config: dict, gcs: int, dashboard: int, temp: str) -> list[str]:
    """cluster.yaml's head start on this machine (no launcher, so no autoscaler)."""
    return _ray_start(config["head_start_ray_commands"][-1], {
        "--port": str(gcs), "--object-manager-port": str(_free_port()),
        "--autoscaling-config": None, "--temp-dir": temp, "--dashboard-port": str(dashboard),
        "--dashboard-agent-listen-port": str(_free_port()),
        "--ray-client-server-port": str(_free_port())})


def _worker_start(config: dict, gcs: int) -> list[str]:
    """cluster.yaml's worker start on this machine, joining the head's GCS at port ``gcs``."""
    return _ray_start(config["worker_start_ray_commands"][-1], {
        "--address": f"127.0.0.1:{gcs}", "--object-manager-port": str(_free_port()),
        "--dashboard-agent-listen-port": str(_free_port())})


def _ship_files(config: dict, laptop: Path, node: Path) -> None:
    """Copy cluster.yaml's file mounts that are single files (not the repository) from the
    user's home ``laptop`` to the node's home ``node``, as `ray up` does."""
    for remote, local in config["file_mounts"].items():
        source = Path(local.replace("~", str(laptop), 1))
        if source.is_file():
            target = Path(remote.replace("~", str(node), 1))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def _dashboard(port: int, path: str, token: str | None = None,
               body: dict | None = None) -> tuple[int, dict]:
    """HTTP status and JSON answer of the dashboard at ``path`` (a POST when ``body``)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


@pytest.fixture
def ray_temp() -> Iterator[str]:
    """A temporary directory for Ray's sessions, short enough for its socket paths."""
    with tempfile.TemporaryDirectory(prefix="ray-auth-") as temp:
        yield temp


@pytest.fixture
def start_ray(ray_temp) -> Iterator[Callable[[list[str], dict[str, str]], tuple[int, str]]]:
    """Runs a `ray start` in a process group of its own: its exit code and output. Every
    process a start left running (Ray's daemons) is killed at the end, however the test
    ended, before ``ray_temp`` goes; no other Ray on this machine is touched."""
    groups = []

    def start(args: list[str], env: dict[str, str]) -> tuple[int, str]:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        groups.append(proc.pid)
        output, _ = proc.communicate(timeout=120)
        return proc.returncode, output

    yield start
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


@pytest.mark.ray  # starts a Ray head and worker nodes of its own with `ray start`
def test_a_cluster_from_cluster_yaml_lets_in_only_who_holds_the_token(tmp_path, ray_temp,
                                                                       start_ray):
    config = yaml.safe_load(CONFIG.read_text())
    env = _container_env(config)
    homes = {name: tmp_path / name for name in ("laptop", "head", "worker", "stranger")}
    for home in homes.values():
        home.mkdir()
    subprocess.run([str(RAY), "get-auth-token", "--generate"], env=_node_env(homes["laptop"]),
                   check=True, capture_output=True)
    token = (homes["laptop"] / ".ray" / "auth_token").read_text()
    for node in ("head", "worker"):
        _ship_files(config, homes["laptop"], homes[node])
    gcs, dashboard = _free_port(), _free_port()
    code, output = start_ray(_head_start(config, gcs, dashboard, ray_temp),
                             _node_env(homes["head"], env))
    assert code == 0, output

    job = {"entrypoint": "true"}
    assert _dashboard(dashboard, "/api/jobs/")[0] == 401
    assert _dashboard(dashboard, "/api/jobs/", body=job)[0] == 401
    status, answer = _dashboard(dashboard, "/api/jobs/", token, job)
    assert status == 200 and answer["submission_id"]

    refused = {"RAY_gcs_server_port_wait_time_s": "5"}  # a refused node gives up after 5 s
    stranger = _node_env(homes["stranger"]) | refused  # no token, no auth settings
    code, output = start_ray(_worker_start(config, gcs), stranger)
    # refused by the head for its token, not for any other reason a start can fail
    assert code != 0 and "InvalidAuthToken: Authentication token is missing" in output, output
    unshipped = _node_env(homes["stranger"], env) | refused  # set up as cluster.yaml, no token
    code, output = start_ray(_worker_start(config, gcs), unshipped)
    assert code != 0 and "AuthenticationError: RAY_AUTH_TOKEN_PATH is set but file" in output, \
        output
    code, output = start_ray(_worker_start(config, gcs), _node_env(homes["worker"], env))
    assert code == 0, output
    _, nodes = _dashboard(dashboard, "/api/v0/nodes", token)
    states = [node["state"] for node in nodes["data"]["result"]["result"]]
    assert states == ["ALIVE", "ALIVE"]  # the head and the worker with the token

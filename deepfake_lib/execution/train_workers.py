"""Ray Train glue: a training loop written against :class:`WorkerContext` runs on a group of
workers, restarts from its latest checkpoint when a worker dies, and sends its lines to the
driver (also when Ray's own output is off, see ``--verbose``)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from deepfake_lib.core import storage
from deepfake_lib.execution.connect import verbose
from deepfake_lib.execution.resources import Resources


class LineRelay:
    """A Ray actor that holds the lines workers print until the driver takes them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def put(self, line: str) -> None:
        self.lines.append(line)

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


class RelayStream:
    """A text stream for a worker: each whole line goes to the driver through the relay."""

    def __init__(self, relay) -> None:
        self.relay, self.pending = relay, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.relay.put.remote(line)
        return len(text)

    def flush(self) -> None:
        pass


class WorkerContext:
    """What a training loop gets from the executor in each worker: its rank among ``world``
    workers, its device, the model wrapped for data-parallel training, the latest checkpoint,
    a way to report an epoch (metrics and an optional checkpoint folder) and ``log``, a stream
    whose lines reach the driver."""

    def __init__(self, relay) -> None:
        import ray.train  # noqa: PLC0415

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.log = RelayStream(relay)

    @property
    def device(self):
        import ray.train.torch  # noqa: PLC0415

        return ray.train.torch.get_device()

    def prepare_model(self, model):
        """``model`` on this worker's device, wrapped for distributed data-parallel training
        when there are several workers (the network itself is ``.module`` then)."""
        import ray.train.torch  # noqa: PLC0415

        return ray.train.torch.prepare_model(model)

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        """A local folder holding the latest reported checkpoint, None on a fresh start."""
        import ray.train  # noqa: PLC0415

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield folder

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        """Report an epoch: every worker calls this; rank 0 gives the checkpoint folder."""
        import ray.train  # noqa: PLC0415

        checkpoint = (ray.train.Checkpoint.from_directory(checkpoint_dir)
                      if checkpoint_dir else None)
        ray.train.report(metrics, checkpoint=checkpoint)

    @staticmethod
    def wait_for_recorded_checkpoints() -> None:
        """Return once Ray has recorded every checkpoint reported so far (fault tests)."""
        import ray.train  # noqa: PLC0415

        ray.train.get_all_reported_checkpoints()


def _worker_main(loop_config: dict) -> None:
    loop_config["loop"](WorkerContext(loop_config["relay"]), *loop_config["args"])


@dataclass
class FitResult:
    """The files of the latest checkpoint and of the best (lowest ``score``), read back."""

    latest: dict[str, bytes]
    best: dict[str, bytes]


def _files(checkpoint, names: tuple[str, ...]) -> dict[str, bytes]:
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as folder:
        return {n: open(os.path.join(folder, n), "rb").read() for n in names
                if os.path.exists(os.path.join(folder, n))}


def _relay_lines(relay, stop: threading.Event) -> None:
    import ray  # noqa: PLC0415

    while True:
        finished = stop.wait(1.0)
        try:
            lines = ray.get(relay.take.remote(), timeout=10)
        except ray.exceptions.GetTimeoutError:  # a busy moment: the lines wait in the relay
            continue
        except ray.exceptions.RayError:  # the relay or Ray going away: nothing more to print
            return
        for line in lines:
            print(line, file=sys.stderr, flush=True)
        if finished:
            return


def fit(loop: Callable[..., None], args: tuple, workers: Resources, storage_uri: str,
        score: str, max_failures: int, files: tuple[str, ...]) -> FitResult:
    """Run ``loop(context, *args)`` on ``workers.count`` workers, each of ``workers.cpus``
    CPUs (and a GPU when ``workers.gpus``), checkpoints under ``storage_uri`` (the two best
    by the lowest reported ``score`` are kept), restarting failed workers from the latest
    checkpoint up to ``max_failures`` times (-1: no limit). Returns the ``files`` of the
    latest and the best checkpoints. Raises RuntimeError when training failed, and
    KeyboardInterrupt when it was stopped (Ctrl-C)."""
    import ray  # noqa: PLC0415
    from ray.train import (  # noqa: PLC0415
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
        TrainingFailedError,
    )
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    fs, path = storage.resolve(storage_uri)
    base, name = path.rstrip("/").rsplit("/", 1)
    relay = ray.remote(LineRelay).options(num_cpus=0).remote()
    stop = threading.Event()
    printer = threading.Thread(target=_relay_lines, args=(relay, stop), daemon=True)
    printer.start()
    use_gpu = workers.gpus > 0
    trainer = TorchTrainer(
        _worker_main,
        train_loop_config={"loop": loop, "args": args, "relay": relay},
        scaling_config=ScalingConfig(num_workers=workers.count or 1, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": workers.cpus or 1.0,
                                                           "GPU": float(use_gpu)}),
        run_config=RunConfig(
            name=name, storage_path=base, storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=score,
                                               checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=max_failures),
            logging_config=LoggingConfig(log_level="INFO" if verbose() else "WARNING")),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        raise RuntimeError(f"training failed after {max_failures} restarts: "
                           f"{str(exc)[-2000:]}") from None
    except SystemExit:  # Ray Train's own Ctrl-C handler ends some aborts this way
        raise KeyboardInterrupt from None
    finally:
        stop.set()
        printer.join()
        ray.kill(relay)
    best = (min(result.best_checkpoints, key=lambda cm: cm[1][score])[0]
            if result.best_checkpoints else result.checkpoint)
    return FitResult(latest=_files(result.checkpoint, files), best=_files(best, files))


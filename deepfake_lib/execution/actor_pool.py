"""The score stage's pool of Ray actors: one video at a time per actor, within budget +
grace, an actor that dies replaced and its video retried once, and no endless wait for
actors that never start.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

from deepfake_lib.execution.resources import Resources, room_for


class ScorerPool:
    """``actors.count`` actors of class ``scorer`` (``actors`` as :func:`sized` sets them),
    each made with ``args`` and having ``ready()`` and ``score(video_id, path) -> score
    row``, fed one video at a time, each call watched against ``limit_s`` (budget + grace):
    past it the actor is replaced and the video gets the ``fallback`` probability. An actor
    gets videos only once it has loaded its models, so start-up never counts as a video's
    time. When no actor is ready and none has become ready within ``start_timeout_s`` of its
    start (no room on the cluster, a node that never came), the pool gives up."""

    MAX_START_FAILURES = 3

    def __init__(self, scorer: type, args: tuple, actors: Resources, limit_s: float,
                 start_timeout_s: float, fallback: float):
        import ray  # noqa: PLC0415

        self.ray, self.actors, self.args, self.fallback = ray, actors, args, fallback
        self.limit_s, self.start_timeout_s = limit_s, start_timeout_s
        options = actors.ray_options()
        options.pop("memory", None)  # an actor holds models, not frames: Ray's default
        self.remote = ray.remote(scorer).options(**options, max_restarts=0)
        self.idle: list = []
        self.starting: dict = {}  # ready() ref -> (actor, started)
        self.running: dict = {}   # score() ref -> (actor, video row, started, tries)
        self.start_failures = 0
        self.retry: list[dict] = []  # videos whose actor died once, to run again
        for _ in range(actors.count or 1):
            self._new()

    def _new(self) -> None:
        actor = self.remote.remote(*self.args)
        self.starting[actor.ready.remote()] = (actor, time.monotonic())

    def submit(self, row: dict, tries: int = 0) -> None:
        actor = self.idle.pop()
        ref = actor.score.remote(row["video_id"], row["path"])
        self.running[ref] = (actor, row, time.monotonic(), tries)

    def _replace(self, actor) -> None:
        self.ray.kill(actor)
        self._new()

    def collect(self) -> list[tuple[dict, dict]]:
        """Wait a little; return ``(video row, score row)`` for videos that finished, timed
        out, or failed twice; resubmit those whose actor died once."""
        ray = self.ray
        refs = list(self.running) + list(self.starting)
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0.2) if refs else ([], [])
        out = []
        for ref in done:
            if ref in self.starting:
                actor, _ = self.starting.pop(ref)
                try:
                    ray.get(ref)
                    self.idle.append(actor)
                except ray.exceptions.RayError as exc:
                    self.start_failures += 1
                    if self.start_failures > self.MAX_START_FAILURES:
                        raise RuntimeError(f"scoring actors cannot start: {exc}") from None
                    self._replace(actor)
                continue
            actor, row, started, tries = self.running.pop(ref)
            try:
                out.append((row, ray.get(ref)))
                self.idle.append(actor)
            except ray.exceptions.RayActorError as exc:
                self._replace(actor)
                if tries == 0:
                    self.retry.append(row)
                else:
                    out.append((row, self._failed(row, "error", f"actor died twice: {exc}"[:500],
                                                  time.monotonic() - started)))
            except ray.exceptions.RayError as exc:
                self.idle.append(actor)
                out.append((row, self._failed(row, "error", str(exc)[:500],
                                              time.monotonic() - started)))
        self._check_start()
        limit = self.limit_s
        for ref, (actor, row, started, _) in list(self.running.items()):
            if time.monotonic() - started > limit:
                del self.running[ref]
                self._replace(actor)
                out.append((row, self._failed(row, "timeout", f"no answer within {limit:g} s; "
                                              "worker killed and replaced; fallback used",
                                              time.monotonic() - started)))
        return out

    def run(self, videos: list[dict]) -> Iterator[tuple[dict, dict]]:
        """Score ``videos`` (rows with ``video_id`` and ``path``): yield ``(video row, score
        row)`` for each as it finishes, then kill every actor (also when the caller stops)."""
        queue = iter(videos)
        remaining = len(videos)
        try:
            while remaining:
                while self.idle and self.retry:
                    self.submit(self.retry.pop(), tries=1)
                while self.idle and (video := next(queue, None)) is not None:
                    self.submit(video)
                for done in self.collect():
                    remaining -= 1
                    yield done
        finally:
            self.close()

    def _check_start(self) -> None:
        """Raise RuntimeError (after killing every actor) when the pool cannot work: no actor
        ready or busy, and the newest start older than ``start_timeout_s``."""
        if self.idle or self.running or not self.starting:
            return
        waited = time.monotonic() - max(started for _, started in self.starting.values())
        if waited <= self.start_timeout_s:
            return
        self.close()
        raise RuntimeError(
            f"no scoring actor became ready within {self.start_timeout_s:g} s "
            f"({self.actors.cpus:g} CPU and {self.actors.gpus:g} GPU each; "
            f"the cluster has {self.ray.available_resources()} free of "
            f"{self.ray.cluster_resources()}): free or add resources, ask for less, or raise "
            "--start-timeout-s if nodes are still starting")

    def close(self) -> None:
        """Kill every actor."""
        actors = self.idle + [a for a, _ in self.starting.values()] + \
            [a for a, *_ in self.running.values()]
        for actor in actors:
            self.ray.kill(actor)
        self.idle, self.starting, self.running = [], {}, {}

    def _failed(self, row: dict, status: str, message: str, seconds: float) -> dict:
        """The score row of a video without an answer: the fallback probability."""
        return {"video_id": row["video_id"], "prob": self.fallback, "status": status,
                "message": message,
                "n_faces": 0, "n_tracks": 0, "n_frames": 0, "seconds": seconds,
                "decode_s": None, "locate_s": None, "classify_s": None}


def sized(actors: Resources, videos: int) -> Resources:
    """``actors`` with ``count`` and ``cpus`` set for ``videos`` videos on the Ray cluster.
    Those given stay (at most one actor per video). By default: as many actors as the
    cluster's GPUs (GPU actors) or CPUs hold, at most one per video; a GPU actor takes 1 CPU,
    and a CPU actor a share of the CPUs free now, as many as lets every actor fit on a node
    (at least 1): with fewer videos than CPUs each actor decodes, finds faces and classifies
    with more threads, so that one video on a laptop has all of its cores."""
    import ray  # noqa: PLC0415

    total = ray.cluster_resources()
    cpus = actors.cpus
    if actors.gpus > 0:
        count = actors.count or max(1, int(total.get("GPU", 0) // actors.gpus))
    else:
        count = actors.count or max(1, int(total.get("CPU", 1) // (cpus or 1.0)))
    count = min(count, max(1, videos))
    if cpus is None:
        cpus = 1.0
        if actors.gpus == 0:
            nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
            share = int(ray.available_resources().get("CPU", 1) // count)
            cpus = float(next((c for c in range(share, 1, -1)
                               if room_for(nodes, [], c, 0, count) >= count), 1))
    return replace(actors, count=count, cpus=cpus)

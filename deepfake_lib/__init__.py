"""deepfake_lib: a Ray pipeline for deepfake video detection in the DFDC layout.

The layers, bottom to top (a module imports only from its own layer or lower ones):
``core`` (storage, records, settings rules, progress, faults), ``media`` (video, faces,
tracks, masks, blends, figures, pictures), ``data`` (the DFDC layout, the built-in sample,
training data), ``models`` (the detector, encoder weights, identity clustering, metrics,
the leaderboard), ``execution`` (the only one that imports Ray: connecting, resources,
batches and resuming, the stage steps, the actor pool, Ray Train), ``stages`` (encode,
cluster, prepare, train, score, predict, and :data:`deepfake_lib.stages.STAGES`),
``report``, then ``pipeline`` and ``cli``.

Importing the package loads no model and starts no Ray; each stage's module does its heavy
imports when called.
"""

__version__ = "0.1.0"

__all__ = ["load_detector"]


def __getattr__(name: str):
    if name == "load_detector":  # imported on first use: the package's import stays light
        from deepfake_lib.models.detector import load_detector  # noqa: PLC0415

        return load_detector
    raise AttributeError(f"module 'deepfake_lib' has no attribute {name!r}")

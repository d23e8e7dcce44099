"""deepfake_lib: a Ray pipeline for deepfake video detection in the DFDC layout.

Importing the package loads no model and starts no Ray; each stage's module does its heavy
imports when called.
"""

__version__ = "0.1.0"

__all__ = ["load_detector"]


def __getattr__(name: str):
    if name == "load_detector":  # imported on first use: the package's import stays light
        from deepfake_lib.model import load_detector  # noqa: PLC0415

        return load_detector
    raise AttributeError(f"module 'deepfake_lib' has no attribute {name!r}")

"""deepfake_lib: a Ray pipeline for deepfake video detection in the DFDC layout.

Importing the package loads no model and starts no Ray; each stage's module does its heavy
imports when called.
"""

__version__ = "0.1.0"

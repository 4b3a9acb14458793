"""Two-stage movie recommender on TensorFlow Recommenders.

TFRS 0.7.7 needs Keras 2 (`tf_keras`): the variable must be set before
TensorFlow is first imported, so every entry point imports this package
first.

TensorFlow's C++ log level: warnings and info hidden (2). On a machine
without an NVIDIA device (no /dev/nvidia*) errors are hidden too (3): the
only one there is the CUDA probe's `failed call to cuInit`, which looks
like a failure but is not. Python errors are never affected, and an
explicit TF_CPP_MIN_LOG_LEVEL wins.
"""

import glob
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL",
                      "2" if glob.glob("/dev/nvidia[0-9]*") else "3")

__version__ = "0.1.0"

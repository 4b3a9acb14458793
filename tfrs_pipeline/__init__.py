"""Two-stage movie recommender on TensorFlow Recommenders.

TFRS 0.7.7 needs Keras 2 (`tf_keras`): the variable must be set before
TensorFlow is first imported, so every entry point imports this package
first.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

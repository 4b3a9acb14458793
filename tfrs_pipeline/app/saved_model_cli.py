"""TensorFlow's `saved_model_cli` with the ScaNN ops registered.

The retrieval SavedModel holds a ScaNN index, whose ops the plain
`saved_model_cli` does not know (`Op type not registered 'Scann>...'`):

    python -m tfrs_pipeline.app.saved_model_cli show --dir DIR --all
    python -m tfrs_pipeline.app.saved_model_cli run --dir DIR --tag_set serve \\
        --signature_def serving_default --input_exprs 'user_id=["42"]'
"""

import sys

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import scann  # noqa: F401  pylint: disable=unused-import  (registers ops)
from tensorflow.python.tools import saved_model_cli


def main():
  sys.argv[0] = "saved_model_cli"
  saved_model_cli.main()


if __name__ == "__main__":
  main()

"""absl flags shared by every command that reads the dataset."""

from absl import flags

from data import raw, splits
from tfrs_pipeline import dataset, pipeline

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "raw_data", None,
    f"Directory with ml-1m/ (or ml-1m.zip) and melu/movies_extrainfos.dat. "
    f"Default: ${raw.RAW_DATA_ENV}; without either, the official files are "
    "downloaded.")
flags.DEFINE_string(
    "data_dir", None,
    f"TFDS data directory. Default: ${dataset.DATA_DIR_ENV}, else "
    "~/tensorflow_datasets.")
flags.DEFINE_enum("split", "random", list(splits.SPLITS),
                  "Train/test split rule (see README, 'Splits').")
flags.DEFINE_enum("on_bad_line", "error", list(raw.ON_BAD_LINE_CHOICES),
                  "On a malformed raw line: stop with an error, or skip and "
                  "count it.")
flags.DEFINE_integer("seed", 42, "Seed for shuffling, sampling and init.")
_D = pipeline.DataConfig()
flags.DEFINE_float(
    "label_share", _D.label_share,
    "Share of train ratings held out of every fit as the two-stage "
    "ranker's labels (README, 'Two stages'); 0 = none.")
flags.DEFINE_float(
    "validation_share", _D.validation_share,
    "> 0: that share of each user's train ratings replaces the test split "
    "(experiments; the test split is then never read).")
flags.DEFINE_float(
    "holdout_users", _D.holdout_users,
    "Share of the users with ratings left out of every fit (new-user "
    "evaluation).")


def data_config() -> pipeline.DataConfig:
  return pipeline.DataConfig(raw_data=FLAGS.raw_data, data_dir=FLAGS.data_dir,
                             split=FLAGS.split, on_bad_line=FLAGS.on_bad_line,
                             seed=FLAGS.seed, label_share=FLAGS.label_share,
                             validation_share=FLAGS.validation_share,
                             holdout_users=FLAGS.holdout_users)

"""absl flags shared by every command that reads the dataset, and flags
generated from a configuration dataclass."""

import dataclasses

from absl import flags

from data import raw, splits
from tfrs_pipeline import dataset, errors, pipeline

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
flags.DEFINE_float(
    "cold_users", _D.cold_users,
    "With label_share > 0: share of the users whose train ratings are all "
    "labels (new users to every fit, for the ranker's new-user lists).")


def data_config() -> pipeline.DataConfig:
  return pipeline.DataConfig(raw_data=FLAGS.raw_data, data_dir=FLAGS.data_dir,
                             split=FLAGS.split, on_bad_line=FLAGS.on_bad_line,
                             seed=FLAGS.seed, label_share=FLAGS.label_share,
                             validation_share=FLAGS.validation_share,
                             holdout_users=FLAGS.holdout_users,
                             cold_users=FLAGS.cold_users)


def define_config_flags(cls, doc: str, skip=(), enums=None,
                        module_name: str = None) -> None:
  """One absl flag per field of the dataclass `cls` (its default, its
  type: bool, int, float, tuple -> list, else string), unless a flag of
  that name exists (e.g. the common --seed) or it is in `skip`.

  `doc`: help text with `{name}` for the field; `enums`: name -> choices;
  `module_name`: the command module whose `--help` lists them.
  """
  defaults = cls()
  for field in dataclasses.fields(cls):
    name = field.name
    if name in FLAGS or name in skip:
      continue
    value, text = getattr(defaults, name), doc.format(name=name)
    where = {"module_name": module_name} if module_name else {}
    if enums and name in enums:
      flags.DEFINE_enum(name, value, list(enums[name]), text, **where)
    elif isinstance(value, bool):
      flags.DEFINE_bool(name, value, text, **where)
    elif isinstance(value, int):
      flags.DEFINE_integer(name, value, text, **where)
    elif isinstance(value, float):
      flags.DEFINE_float(name, value, text, **where)
    elif isinstance(value, tuple):
      flags.DEFINE_list(name, [str(v) for v in value], text, **where)
    else:
      flags.DEFINE_string(name, value, text, **where)


def config_from_flags(cls):
  """The dataclass `cls` from the parsed flags of `define_config_flags`
  (list flags become tuples of the default's element type); its
  validation raises `errors.ConfigError`."""
  defaults, values = cls(), {}
  for field in dataclasses.fields(cls):
    value = FLAGS[field.name].value
    default = getattr(defaults, field.name)
    if isinstance(default, tuple):
      kind = type(default[0]) if default else int
      try:
        value = tuple(kind(v) for v in value if str(v).strip())
      except ValueError as e:
        raise errors.ConfigError(f"--{field.name}: {e}") from e
    values[field.name] = value
  try:
    return cls(**values)
  except errors.ConfigError:
    raise
  except (TypeError, ValueError) as e:
    raise errors.ConfigError(str(e)) from e

"""Configuration dataclasses from the parsed flags.

The flags themselves are defined, without TensorFlow, by `flag_specs`
(one flag per dataclass field, the field's docstring as its help); the
CLI defines a command's flags before it imports the command's module.
"""

import dataclasses

from absl import flags

from tfrs_pipeline import errors, pipeline
from tfrs_pipeline.app import flag_specs

FLAGS = flags.FLAGS


def data_config() -> pipeline.DataConfig:
  """The DataConfig of the data flags (`flag_specs.DATA_FLAGS`; the
  other fields keep their defaults)."""
  return config_from_flags(pipeline.DataConfig, flag_specs.DATA_FLAGS)


def config_from_flags(cls, names=None):
  """The dataclass `cls` from the parsed flags named like its fields
  (those in `names` if given; list flags become tuples of the default's
  element type); its validation raises `errors.ConfigError`."""
  defaults, values = cls(), {}
  for field in dataclasses.fields(cls):
    if names is not None and field.name not in names:
      continue
    value = FLAGS[field.name].value
    default = getattr(defaults, field.name)
    if isinstance(default, tuple):
      kind = type(default[0]) if default else str
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

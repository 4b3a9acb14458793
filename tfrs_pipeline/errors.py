"""Typed errors of the library; the CLI maps each to an exit status.

Library code raises these for expected failures (bad settings, malformed
input files, missing data or exports, invalid requests) so that the CLI
prints one line and exits with `exit_code`, and the HTTP service answers
a 4xx, instead of a traceback.

    Error            1  (base)
    ConfigError      2  a setting or argument that cannot work
    InputError       3  a malformed input file line or value
    MissingError     4  data, a run or an export that is not there
    RequestError     2  a recommendation request that cannot be served
"""


class Error(Exception):
  """Base of the expected errors."""
  exit_code = 1


class ConfigError(Error, ValueError):
  """A configuration or command-line value that cannot work."""
  exit_code = 2


class InputError(Error, ValueError):
  """Malformed input data (the message names the file, line and problem)."""
  exit_code = 3


class MissingError(Error, FileNotFoundError):
  """Data, a run directory or an export that does not exist (yet)."""
  exit_code = 4


class RequestError(Error, ValueError):
  """A request that cannot be served: unknown ids, bad values."""
  exit_code = 2

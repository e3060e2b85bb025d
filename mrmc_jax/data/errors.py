"""The data package's own exception."""


class DataNotFoundError(FileNotFoundError):
  """A data set's files are missing; the message says how to get them."""

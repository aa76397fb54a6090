"""One exception root for everything a person or operator can cause."""

from __future__ import annotations


class TomoError(Exception):
    """Root of tomo's errors. The message is written for a person to read."""


class ConfigError(TomoError):
    """A setting is missing or wrong; the message names the setting to change."""


class ModelError(TomoError):
    """A language model could not be loaded or did not answer."""


class StorageError(TomoError):
    """The database refused a read or a write (read-only, locked, down)."""


class InputError(TomoError):
    """A message or attachment that tomo cannot take as it is."""


class AlreadyRunningError(TomoError):
    """Another tomo process holds this data directory."""

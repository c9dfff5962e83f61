"""Errors meant for people: each says what was expected, what was found and what to do next.

The CLI prints a ``UserError`` as one message, without a traceback; every other exception is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input, files or environment that the user can fix."""


class ConfigError(UserError, ValueError):
    """A configuration value or override is invalid."""


class BackboneNotFoundError(UserError, FileNotFoundError):
    """Backbone weights are neither in the Hugging Face cache nor in the given directory."""


class DatasetError(UserError):
    """A dataset root, annotation file or sample does not match the documented layout."""

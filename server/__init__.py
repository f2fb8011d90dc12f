"""voxwire: a real-time WebSocket streaming text-to-speech server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("voxwire")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

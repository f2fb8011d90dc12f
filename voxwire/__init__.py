"""voxwire's Python client: ``from voxwire.client import connect`` (see voxwire/client.py)."""

from voxwire.client import Audio, Session, VoxwireError, connect

__all__ = ["Audio", "Session", "VoxwireError", "connect"]

"""Uploaded voices (issue 4): upload checks (``upload``), the HTTP routes (``api``) and
the node-local side of the shared voice store (``registry``). See docs/voices.md."""

"""The examples are scripts, not an installed package: their tests import them by module
name from examples/ (``import twilio_bridge``), as mypy checks them (``files`` has
"examples", which has no __init__.py)."""

import sys

from tests.support import ROOT

if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))

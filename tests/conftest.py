"""Suite-wide set-up: the tests' shared helpers (modules directly in tests/, e.g. `script_loader`) are importable
from every test folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

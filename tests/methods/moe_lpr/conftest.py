import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "expansion"))  # expansion_world (shared tiny world)

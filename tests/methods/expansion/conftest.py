import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # expansion_world (the tiny world every expansion test shares)

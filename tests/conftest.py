import os
import sys

# Tests import configs/ as a package from the repo root, like main.py does.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")

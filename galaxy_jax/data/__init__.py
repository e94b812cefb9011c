"""Datasets: vectors for SAE/DEC (vectors.py) and galaxy images (source.py and friends)."""

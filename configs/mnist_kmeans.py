"""Baseline: k-means (n_init 20) on the 784 raw MNIST pixels.

Run:
  python main.py --config=configs/mnist_kmeans.py --workdir=workdirs/mnist_kmeans/seed0
"""

from configs import mnist_dec


def get_config(arg=None):
    c = mnist_dec.get_config(arg)
    c.mode = "kmeans"
    return c

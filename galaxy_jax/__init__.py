"""galaxy_jax: Deep Embedding Clustering of galaxy images on Xception features, in JAX."""

__version__ = "0.1.0"

"""Stacked (denoising) autoencoder of the DEC paper: d-500-500-2000-10 by default.

Layer pair i is an encoder Dense `enc_i` (dims[i] -> dims[i+1]) and a decoder Dense `dec_i`
(dims[i+1] -> dims[i]). ReLU everywhere except the embedding (last encoder layer) and the
reconstruction of the input (dec_0), which are linear (Xie et al. 2016, section 3.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Uniform variance scaling with scale 1/3 over fan-in, the initialiser the public DEC-keras
# reimplementation uses for MNIST.
_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class Autoencoder(nn.Module):
    """dims = (input_dim, *hidden, embedding_dim)."""

    dims: Sequence[int]

    def setup(self):
        n = len(self.dims) - 1
        self.enc = [
            nn.Dense(self.dims[i + 1], kernel_init=_init, name=f"enc_{i}") for i in range(n)
        ]
        self.dec = [nn.Dense(self.dims[i], kernel_init=_init, name=f"dec_{i}") for i in range(n)]

    @property
    def n_layers(self) -> int:
        return len(self.dims) - 1

    def encode(self, x: jnp.ndarray, upto: int | None = None) -> jnp.ndarray:
        """x: [B, dims[0]] -> [B, dims[upto]] (the embedding when upto is None)."""
        upto = self.n_layers if upto is None else upto
        for i in range(upto):
            x = self.enc[i](x)
            if i < self.n_layers - 1:
                x = nn.relu(x)
        return x

    def decode(self, z: jnp.ndarray) -> jnp.ndarray:
        """z: [B, embedding_dim] -> [B, dims[0]] reconstruction."""
        for i in reversed(range(self.n_layers)):
            z = self.dec[i](z)
            if i > 0:
                z = nn.relu(z)
        return z

    def layer_pair(self, x: jnp.ndarray, i: int, rate: float, train: bool) -> jnp.ndarray:
        """Denoising pair i: dropout(x) -> enc_i -> dropout -> dec_i; returns the reconstruction.

        Needs the 'dropout' RNG when train is True.
        """
        h = self.enc[i](self._dropout(x, rate, train))
        if i < self.n_layers - 1:
            h = nn.relu(h)
        y = self.dec[i](self._dropout(h, rate, train))
        return nn.relu(y) if i > 0 else y

    def _dropout(self, x, rate, train):
        if not train or rate == 0.0:
            return x
        keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - rate, x.shape)
        return jnp.where(keep, x / (1.0 - rate), 0.0)

    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Returns (embedding [B, dims[-1]], reconstruction [B, dims[0]])."""
        z = self.encode(x)
        return z, self.decode(z)

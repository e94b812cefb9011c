"""Domain adaptation of the ImageNet Xception to galaxies: its exit flow, on cached activations.

Training all of Keras' Xception from ImageNet is accelerator work (mode `ssl` with
weights='imagenet'). On a CPU the entry and middle flows (blocks 1-12: 89% of the forward FLOPs
at 128 px, by XLA's cost analysis) stay as ImageNet trained them, and their output for each of
the 8 rotations and flips of every galaxy is computed once and cached (float16, `views_fn`). The
exit flow (blocks 13-14, 6.8M of the 20.8M trainable parameters) is then trained contrastively
on those cached maps (SimCLR's NT-Xent, galaxy_jax/simclr.py): two different dihedral views of a
galaxy, each cropped at random in the activation map (roughly a crop of the image, as SimCLR
crops; the map keeps its scale), are a positive pair; the other galaxies of the batch are the
negatives. Batch norm stays in inference mode with ImageNet's statistics (its scale and offset
train), as Keras advises for fine-tuning: a galaxy's features never depend on the batch it is
in. Afterwards a galaxy's feature is the trained exit flow on the full maps of its 8 views,
averaged (`adapted_features`): what `extract` with tta computes from the images with the adapted
weights, up to the cache's float16 rounding.

The mode galaxy_jax/modes/adapt.py wires this to a config, the checkpoints and the outputs.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from galaxy_jax.data.preprocess import preprocess
from galaxy_jax.features import FeatureSpec, dihedral_batch, pooled_features
from galaxy_jax.models import xception
from galaxy_jax.simclr import ProjectionHead, init_head, nt_xent
from galaxy_jax.train_loop import State

EXIT_BLOCKS = ("block13", "block14")  # the exit flow's variable prefixes
VIEWS = 8  # the dihedral group: 4 rotations, each also flipped


def exit_input_shape(spec: FeatureSpec) -> tuple[int, int, int]:
    """(h, w, C) of the middle flow's output for inputs of spec.image_size (C: 728 x width)."""
    model = spec.network()
    x = jax.ShapeDtypeStruct((1, spec.image_size, spec.image_size, 3), jnp.float32)

    def middle(v, y):
        h = model.apply(v, y, stage="entry")[1]["block3"]
        return model.apply(v, h, stage="middle")[1]["middle"]

    shapes = jax.eval_shape(middle, xception.variable_shapes(model), x)
    return tuple(int(s) for s in shapes.shape[1:])


@functools.lru_cache(maxsize=4)
def views_fn(mesh: Mesh, spec: FeatureSpec):
    """jit(variables, images [B, H, W, 3] uint8) -> [B, 8 * h * w * C] float16: the middle
    flow's output for the 8 dihedral views of each image (view k as features.dihedral_batch),
    flattened row-major as [8, h, w, C]. B must be a multiple of the mesh size."""
    data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    model = spec.network()
    trunk = functools.partial(
        pooled_features,
        model,
        micro_batch=spec.micro_batch,
        num_shards=mesh.devices.size,
        output="middle",
    )

    def fn(variables, images):
        x = preprocess(images, crop_size=spec.crop_size or None, image_size=spec.image_size)
        x = jax.lax.with_sharding_constraint(x, data)
        # A loop over the views, not 8 copies of the network: compile time stays that of one.
        maps = jax.lax.map(lambda k: trunk(variables, dihedral_batch(x, k)), jnp.arange(VIEWS))
        maps = jnp.moveaxis(maps, 0, 1).astype(jnp.float16)  # [B, 8, h, w, C]
        return maps.reshape(maps.shape[0], -1)

    return jax.jit(fn, in_shardings=(replicated, data), out_shardings=data)


def exit_variables(variables: dict) -> dict:
    """The exit flow's {'params', 'batch_stats'} out of a whole Xception's (no top)."""
    return {
        col: {k: v for k, v in variables[col].items() if k.startswith(EXIT_BLOCKS)}
        for col in ("params", "batch_stats")
    }


def with_exit(variables: dict, exit_vars: dict) -> dict:
    """A whole Xception's variables with the exit flow's replaced by `exit_vars`."""
    return {col: {**variables[col], **exit_vars[col]} for col in ("params", "batch_stats")}


class ExitModel(nn.Module):
    """Xception's exit flow + projection head: middle-flow maps [B, h, w, C] -> (z [B, proj_dim],
    pooled [B, 2048]), both float32. Batch norm in inference mode (see the module docstring).

    Variables: params {'backbone' (block13_*, block14_* only), 'projector'}, batch_stats
    {'backbone'}, the backbone's named as in the whole `Xception` (`exit_variables`).
    """

    width: float = 1.0
    middle_blocks: int = 8
    proj_hidden: int = 512
    proj_dim: int = 128

    @nn.compact
    def __call__(self, h):
        _, out = xception.Xception(
            width=self.width, middle_blocks=self.middle_blocks, name="backbone"
        )(h, train=False, stage="exit")
        pooled = out["pooled"].astype(jnp.float32)
        z = ProjectionHead(self.proj_hidden, self.proj_dim, name="projector")(pooled)
        return z.astype(jnp.float32), pooled


def pair_views(views, idx, shape, crop: int, seed: int, step: int) -> np.ndarray:
    """The host-side batch of step `step`: [2B, crop, crop, C] float32, rows i and B + i two
    different dihedral views of galaxy idx[i], each cropped at its own random offset.

    views: [N, 8 * h * w * C] float16 (an array or a memmap); shape: (h, w, C); crop: the side
    kept (<= min(h, w)). Depends only on (seed, step) and idx, so a resumed run draws the same.
    """
    h, w, c = shape
    rng = np.random.default_rng([seed, step, 11])
    b = len(idx)
    first = rng.integers(0, VIEWS, b)
    second = (first + rng.integers(1, VIEWS, b)) % VIEWS  # never the same view
    oy = rng.integers(0, h - crop + 1, (2, b))
    ox = rng.integers(0, w - crop + 1, (2, b))
    order = np.argsort(idx, kind="stable")  # a memmap reads sorted rows fastest
    rows = np.empty((b, VIEWS, h, w, c), np.float16)
    rows[order] = np.asarray(views[np.asarray(idx)[order]]).reshape(b, VIEWS, h, w, c)
    out = np.empty((2 * b, crop, crop, c), np.float32)
    for j, view in enumerate((first, second)):
        for i in range(b):
            y, x = oy[j, i], ox[j, i]
            out[j * b + i] = rows[i, view[i], y : y + crop, x : x + crop]
    return out


def train_step(state: State, views, *, model: ExitModel, temp: float):
    """One optimiser step on a `pair_views` batch [2B, s, s, C] -> (state, {'loss', 'top1'})."""
    b = views.shape[0] // 2

    def loss_fn(params):
        z, _ = model.apply({"params": params, "batch_stats": state.batch_stats}, views)
        return nt_xent(z[:b], z[b:], temp)

    (loss, top1), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss, "top1": top1}


@functools.lru_cache(maxsize=8)
def make_train_step(model: ExitModel, temp: float):
    """`train_step` with its settings bound, jitted once (donating the state) and cached."""
    return jax.jit(functools.partial(train_step, model=model, temp=temp), donate_argnums=(0,))


@functools.lru_cache(maxsize=4)
def _features_fn(model: ExitModel, shape: tuple):
    def fn(variables, rows):  # [B, 8 * h * w * C] float16 -> [B, D], the mean over the views
        b = rows.shape[0]
        maps = rows.reshape(b * VIEWS, *shape).astype(jnp.float32)
        _, pooled = model.apply(variables, maps)
        return pooled.reshape(b, VIEWS, -1).mean(axis=1)

    return jax.jit(fn)


def adapted_features(
    model: ExitModel, variables, views, shape, *, batch_size: int = 32, progress: bool = True
) -> np.ndarray:
    """[N, D] float32: the exit flow in `variables` on the full maps of each galaxy's 8 cached
    views, averaged. Fixed-size batches (the last padded), so it compiles once."""
    fn = _features_fn(model, tuple(shape))
    n = len(views)
    out = []
    for s in tqdm(range(0, n, batch_size), desc="features", leave=False, disable=not progress):
        idx = np.minimum(np.arange(s, s + batch_size), n - 1)
        out.append(np.asarray(fn(variables, np.asarray(views[idx])))[: min(batch_size, n - s)])
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def init_variables(model: ExitModel, imagenet: dict, seed: int) -> dict:
    """{'params', 'batch_stats'} to start from: the exit flow of `imagenet` (a whole Xception's
    variables), a fresh seeded projection head (simclr.init_head)."""
    exit_vars = exit_variables(imagenet)
    feature_dim = xception.scaled_channels(xception.FEATURE_DIM, model.width)
    head = init_head(feature_dim, model.proj_hidden, model.proj_dim, seed)
    return {
        "params": {"backbone": exit_vars["params"], "projector": head},
        "batch_stats": {"backbone": exit_vars["batch_stats"]},
    }

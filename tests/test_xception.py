"""The Flax Xception: Keras' parameter counts, shapes, fast-path ops against XLA oracles, tracing.

Parity with Keras itself is in tests/test_weights.py (it needs a converted reference file).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from galaxy_jax.models import xception
from galaxy_jax.models.xception import Xception


@pytest.mark.parametrize("include_top, expected", [(False, 20_861_480), (True, 22_910_480)])
def test_parameter_count_equals_keras(include_top, expected):
    shapes = xception.variable_shapes(Xception(include_top=include_top))
    assert xception.count_params(shapes) == expected
    assert set(shapes) == {"params", "batch_stats"}


@pytest.fixture(scope="module")
def variables():
    return xception.init_variables(Xception())


def test_intermediates_and_minimum_size(variables):
    logits, out = jax.jit(Xception().apply)(variables, jnp.zeros((1, 71, 71, 3)))
    assert logits is None
    assert out["pooled"].shape == (1, 2048) and out["pooled"].dtype == jnp.float32
    assert out["stem"].shape == (1, 33, 33, 64)
    assert out["block2"].shape == (1, 17, 17, 128)
    assert out["block13"].shape == (1, 3, 3, 1024)
    assert out["block14"].shape == (1, 3, 3, 2048)
    with pytest.raises(ValueError, match="at least 71x71"):
        Xception().apply(variables, jnp.zeros((1, 70, 80, 3)))


def test_non_square_input(variables):
    _, out = jax.jit(Xception().apply)(variables, jnp.zeros((1, 71, 120, 3)))
    assert out["block14"].shape == (1, 3, 4, 2048)


@pytest.mark.parametrize("h, w", [(7, 7), (6, 9)])
def test_depthwise_matches_grouped_convolution(h, w):
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (2, h, w, 5))
    k = jax.random.normal(kk, (3, 3, 5))
    oracle = lax.conv_general_dilated(
        x, k[:, :, None, :], (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=5,
    )  # fmt: skip
    np.testing.assert_allclose(xception.depthwise3x3(x, k), oracle, atol=1e-5)


@pytest.mark.parametrize("stride, h, w", [(1, 7, 7), (1, 6, 9), (2, 9, 9), (2, 10, 7)])
def test_stem_convolution_matches_valid_convolution(stride, h, w):
    kx, kk = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (2, h, w, 3))
    k = jax.random.normal(kk, (3, 3, 3, 4))
    oracle = lax.conv_general_dilated(
        x, k, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    got = xception.conv3x3_valid(x, k, stride)
    assert got.shape == oracle.shape
    np.testing.assert_allclose(got, oracle, atol=1e-5)


def test_global_average_pool_is_the_mean():
    x = jax.random.normal(jax.random.key(4), (2, 3, 5, 7)).astype(jnp.bfloat16)
    got = xception.global_average_pool(x)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, jnp.mean(x.astype(jnp.float32), axis=(1, 2)), atol=1e-6)


@pytest.mark.parametrize("size", [9, 10])
def test_strided_residual_matches_same_convolution(size):
    kx, kk = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (2, size, size, 4))
    k = jax.random.normal(kk, (4, 6))
    variables = {"params": {"kernel": k}}
    got = xception.Residual(6).apply(variables, x)
    oracle = lax.conv_general_dilated(
        x, k[None, None], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(got, oracle, atol=1e-5)


@pytest.mark.parametrize("h, w", [(9, 9), (10, 10), (147, 147), (1, 1), (2, 5), (6, 9)])
def test_max_pool_matches_reduce_window_same(h, w):
    x = jax.random.normal(jax.random.key(2), (2, h, w, 3))

    def oracle(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")

    np.testing.assert_array_equal(xception.max_pool3x3_s2(x), oracle(x))  # max is exact
    # Training differentiates through it: the same gradient (no ties in random normals).
    grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) ** 2))(x)  # noqa: E731
    np.testing.assert_allclose(grad(xception.max_pool3x3_s2), grad(oracle), atol=1e-6)


def test_entry_then_rest_is_the_whole_network(variables):
    x = jax.random.uniform(jax.random.key(5), (2, 75, 80, 3), minval=-1, maxval=1)
    apply = jax.jit(Xception(include_top=True).apply, static_argnames="stage")
    top = xception.init_variables(Xception(include_top=True))
    logits, out = apply(top, x)
    none, entry = apply(top, x, stage="entry")
    assert none is None and "block4" not in entry and "pooled" not in entry
    np.testing.assert_array_equal(entry["block3"], out["block3"])
    logits_rest, rest = apply(top, entry["block3"], stage="rest")
    assert "stem" not in rest and "block3" not in rest
    np.testing.assert_allclose(rest["pooled"], out["pooled"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logits_rest, logits, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="stage must be one of"):
        Xception().apply(variables, x, stage="trunk")


def test_traces_once_per_input_shape(variables):
    traces = []

    @jax.jit
    def pooled(v, x):
        traces.append(x.shape)
        return Xception().apply(v, x)[1]["block2"]  # the rest is dead code: compiles fast

    for shape in [(2, 71, 71, 3), (2, 71, 71, 3), (2, 72, 72, 3), (2, 71, 71, 3)]:
        pooled(variables, jnp.ones(shape))
    assert traces == [(2, 71, 71, 3), (2, 72, 72, 3)]


def test_bfloat16_is_close_to_float32(variables):
    x = jax.random.uniform(jax.random.key(3), (2, 75, 75, 3), minval=-1, maxval=1)
    block4 = lambda dtype: jax.jit(lambda v, x: Xception(dtype=dtype).apply(v, x)[1]["block4"])
    f32, bf16 = block4(jnp.float32)(variables, x), block4(jnp.bfloat16)(variables, x)
    assert bf16.dtype == jnp.bfloat16
    rel = jnp.linalg.norm(bf16.astype(jnp.float32) - f32) / jnp.linalg.norm(f32)
    assert rel < 0.05


@pytest.mark.parametrize(
    "width, middle, feature_dim, params",
    [(1.0, 8, 2048, 20_861_480), (0.25, 2, 512, 731_904), (0.125, 0, 256, 131_784)],
)
def test_width_and_middle_blocks(width, middle, feature_dim, params):
    model = Xception(width=width, middle_blocks=middle)
    assert model.feature_dim == feature_dim
    assert xception.count_params(xception.variable_shapes(model)) == params
    x = jax.ShapeDtypeStruct((2, 72, 72, 3), jnp.float32)
    _, out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], x)
    assert out["pooled"].shape == (2, feature_dim)
    assert out["block2"].shape[-1] == xception.scaled_channels(128, width)
    middle_names = sorted(k for k in out if k.startswith("block") and 5 <= int(k[5:]) <= 12)
    assert middle_names == sorted(f"block{b}" for b in range(5, 5 + middle))


def test_default_architecture_keeps_keras_names_and_bad_fields_are_refused():
    names = set(xception.variable_shapes(Xception())["params"])
    assert {"block12_sepconv3", "block13_residual", "block14_sepconv2_bn"} <= names
    assert xception.scaled_channels(728, 1.0) == 728 and xception.scaled_channels(728, 0.25) == 184
    with pytest.raises(ValueError, match="middle_blocks"):
        xception.variable_shapes(Xception(middle_blocks=9))

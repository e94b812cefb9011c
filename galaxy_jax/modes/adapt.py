"""Mode `adapt`: the ImageNet Xception's exit flow adapted to galaxies (galaxy_jax/adapt.py).

Three phases, each resumable:
  1. views: the middle flow's output for the 8 rotations and flips of every image, once, float16
     (shards under views/shards/ while it runs; a kill keeps every finished shard, SIGTERM the
     finished batches). `views_from` reads another adapt run's finished cache instead (same
     weights, images, size and crop: checked), so seeds share it.
  2. train: the exit flow, contrastively, on pairs of cached views (ckpt/, Orbax; SIGTERM saves
     and exits 75; a resumed run equals an uninterrupted one). optim.steps=0 skips it: the
     features are then ImageNet's own, from the same cache (the frozen baseline).
  3. features: the exit flow on each galaxy's 8 full maps, averaged.

Workdir (the clustering modes read it as they read an `extract` workdir: data.path=<workdir>):
  features.npy, ids.npy, labels.npy, features_meta.json   as `extract` writes them
  encoder.npz, encoder.json   the whole Xception with the adapted exit flow (weights.save_encoder);
                              `extract --config.weights=<workdir>/encoder.npz --config.tta=True`
                              with the same data.image_size and data.crop_size gives the same
                              features for new images (from the images, not the cache)
  views/views.npy, views/views_meta.json   the cache [N, 8 * h * w * 728] float16 (phase 1)
  ckpt/                       the exit flow and projection head's train state; history.json
  results.json                loss and top-1 history, wall time per phase, what was shared
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import time

import jax
import numpy as np
from absl import logging

from galaxy_jax import adapt, atomic, parallel, runs, shards, validate, weights
from galaxy_jax import features as features_lib
from galaxy_jax.checkpoint import Checkpointer
from galaxy_jax.data.vectors import save_features
from galaxy_jax.errors import UserError
from galaxy_jax.optim import make_optimizer
from galaxy_jax.train_loop import BatchSampler, State, StepRunner
from galaxy_jax.workdir import check_run_config, prepare_workdir, versions, write_results

RUN_FIELDS = ("seed", "data", "weights", "weights_path", "model", "optim", "crop", "temperature")
VIEWS_DIR, VIEWS, VIEWS_META = "views", "views.npy", "views_meta.json"


def _views_identity(config, source, loaded, spec) -> dict:
    """Everything the cached maps depend on (not batch size, devices or shard layout)."""
    return {
        "weights_sha256": loaded.sha256,
        "ids_sha256": shards.ids_sha256(source.ids),
        "num_images": len(source),
        "source_image_shape": list(source.image_shape),
        "image_size": spec.image_size,
        "crop_size": spec.crop_size,
        "views": "middle flow output, 8 dihedral views, float16",
    }


def _read_views(directory: str, meta_hash: str, strict: bool):
    """(memmap of views.npy, its meta) if `directory` holds a finished cache made under
    `meta_hash`; None if not (strict: UserError saying why)."""
    meta_path, path = os.path.join(directory, VIEWS_META), os.path.join(directory, VIEWS)
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        views = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        if strict:
            raise UserError(f"views_from: no finished view cache in {directory} ({e})") from None
        return None
    if meta.get("meta_hash") != meta_hash or list(views.shape) != meta.get("shape"):
        if strict:
            raise UserError(
                f"views_from: the cache in {directory} was made from other weights, images, "
                "image_size or crop_size than this run's (its views_meta.json differs)"
            )
        return None
    return views, meta


def _views(config, workdir, source, loaded, spec, wall) -> tuple[np.ndarray, dict, str]:
    """Phase 1: (views [N, 8*h*w*C] float16 memmap, their meta, the directory they are in)."""
    identity = _views_identity(config, source, loaded, spec)
    meta_hash = shards.meta_hash(identity)
    if config.views_from:
        directory = os.path.join(os.path.abspath(os.path.expanduser(config.views_from)), VIEWS_DIR)
        views, meta = _read_views(directory, meta_hash, strict=True)
        logging.info("Views read from %s (views_from).", directory)
        return views, meta, directory
    directory = os.path.join(workdir, VIEWS_DIR)
    found = _read_views(directory, meta_hash, strict=False)
    if found is not None:
        return (*found, directory)
    t0 = time.time()
    shape = adapt.exit_input_shape(spec)
    dim = adapt.VIEWS * int(np.prod(shape))
    shards.remove(os.path.join(directory, VIEWS_META))  # an older cache's: no longer describes it
    for name in glob.glob(os.path.join(glob.escape(directory), f"{VIEWS}.tmp-*")):
        os.remove(name)  # left by a kill while the shards were being copied into views.npy
    mesh = parallel.mesh()
    print(f"adapt: caching the middle flow's output of 8 views x {len(source)} images {shape}")
    views, _ = features_lib.extract_features(
        source,
        loaded.variables,
        spec,
        batch_size=config.batch_size,
        mesh=mesh,
        shard_dir=os.path.join(directory, "shards"),
        shard_size=config.shard_size,
        meta_hash=meta_hash,
        feature_fn=adapt.views_fn(mesh, spec),
        dim=dim,
        store_dtype=np.float16,
        out_path=os.path.join(directory, VIEWS),
    )
    for s in range(0, len(views), 256):  # in blocks: the cache may be larger than memory
        if not np.isfinite(views[s : s + 256]).all():
            raise UserError(
                "non-finite middle-flow activations (beyond float16's 65504, or from the "
                "images or weights); check the input scaling and the weights"
            )
    del views
    seconds = time.time() - t0
    meta = {
        **identity,
        "meta_hash": meta_hash,
        "shape": [len(source), dim],
        "map_shape": list(shape),
        "seconds": round(seconds, 2),
        "images_per_second": round(len(source) * adapt.VIEWS / max(seconds, 1e-9), 2),
        "versions": versions(),
    }
    atomic.write_json(os.path.join(directory, VIEWS_META), meta)  # last: marks it finished
    shutil.rmtree(os.path.join(directory, "shards"), ignore_errors=True)
    wall["views"] = seconds
    return np.load(os.path.join(directory, VIEWS), mmap_mode="r"), meta, directory


def run_adapt(config, workdir: str) -> dict:
    """Writes the workdir of the module docstring. A finished run re-run restores its last
    checkpoint, rewrites encoder.npz and keeps its features (the trained weights' hash and the
    file's SHA-256 match)."""
    from galaxy_jax.data.from_config import make_image_source

    t_start = time.time()
    validate.adapt(config)
    d = config.data
    workdir = prepare_workdir(workdir)
    source = make_image_source(d, report_path=os.path.join(workdir, "bad_input_report.json"))
    loaded = weights.from_config(config, include_top=False)
    ckpt_dir = os.path.join(workdir, "ckpt")
    check_run_config(ckpt_dir, config, RUN_FIELDS)
    spec = features_lib.FeatureSpec(
        image_size=d.image_size, crop_size=d.crop_size, architecture=_architecture(loaded)
    )
    mb = config.micro_batch
    mb = features_lib.auto_micro_batch(spec) if mb < 0 else int(mb)
    spec = dataclasses.replace(spec, micro_batch=mb)

    shape = adapt.exit_input_shape(spec)  # checked before hours of caching
    crop = int(config.crop) or shape[0]
    if crop > min(shape[:2]):
        raise UserError(f"config.crop: {crop} is larger than the {shape[0]}x{shape[1]} maps")
    if int(config.optim.batch_size) > len(source):
        raise UserError(
            f"config.optim.batch_size: {config.optim.batch_size} galaxies a step, but the data "
            f"has {len(source)}: a galaxy would be its own negative"
        )
    wall: dict = {}
    views, vmeta, views_dir = _views(config, workdir, source, loaded, spec, wall)

    m, o = config.model, config.optim
    model = adapt.ExitModel(
        proj_hidden=int(m.proj_hidden), proj_dim=int(m.proj_dim), **loaded.architecture
    )
    variables = adapt.init_variables(model, loaded.variables, config.seed)
    steps = int(o.steps)
    history: dict = {}
    if steps:
        state = State.create(
            apply_fn=None,
            params=variables["params"],
            tx=make_optimizer(o),
            batch_stats=variables["batch_stats"],
        )
        state = state.replace(step=np.int32(0))  # a restored step is an int32 array too
        ckpt = Checkpointer(ckpt_dir)
        step, state = ckpt.restore(state)
        if step is not None:
            logging.info("adapt resumes from step %d", step)
        sampler = BatchSampler(len(views), int(o.batch_size), seed=config.seed)
        seed = int(config.seed)

        def batch_fn(i):
            return (adapt.pair_views(views, sampler(i), shape, crop, seed, i),)

        t1, start = time.time(), int(state.step)
        runner = StepRunner(
            "adapt",
            ckpt,
            total=steps,
            start=start,
            every=config.checkpoint_every,
            log_every=config.log_every,
            wall=wall,
        )
        state = runner.run(state, adapt.make_train_step(model, float(config.temperature)), batch_fn)
        runner.close()
        history, wall["train"] = runner.history, time.time() - t1
        wall["train_images_per_second"] = round(
            (steps - start) * 2 * int(o.batch_size) / max(wall["train"], 1e-9), 2
        )
        variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})

    exit_vars = {col: variables[col]["backbone"] for col in ("params", "batch_stats")}
    whole = adapt.with_exit(loaded.variables, exit_vars)
    enc = weights.save_encoder(
        enc_path(workdir),
        whole,
        loaded.architecture,
        image_size=spec.image_size,
        crop_size=spec.crop_size,
        trained_by=f"adapt (exit flow, NT-Xent on cached views, {steps} steps)",
        started_from=loaded.description,
        data=d.name,
        num_images=len(source),
        config=config.to_dict(),
    )
    features = _features(config, workdir, source, model, variables, views, vmeta, enc, wall)
    wall["total"] = time.time() - t_start
    final = history["loss"][-1][1] if history.get("loss") else None
    print(
        f"adapt: {len(source)} images, {steps} steps, loss {final}; features "
        f"{features.shape} -> {workdir}/features.npy"
    )
    return write_results(
        workdir,
        config,
        mode="adapt",
        metrics={
            "final_loss": final,
            "final_top1": history["top1"][-1][1] if history.get("top1") else None,
        },
        history={"adapt": history},
        views={"dir": views_dir, "shared": bool(config.views_from), **vmeta},
        trained_parameters=(
            int(sum(np.size(v) for v in jax.tree.leaves(variables["params"]))) if steps else 0
        ),
        encoder={"path": enc_path(workdir), "variables_sha256": enc["variables_sha256"]},
        num_images=len(source),
        wall_s=wall,
    )


def _architecture(loaded) -> tuple:
    if loaded.architecture == weights.DEFAULT_ARCHITECTURE:
        return ()
    return tuple(sorted(loaded.architecture.items()))


def _features(config, workdir, source, model, variables, views, vmeta, enc, wall) -> np.ndarray:
    """Phase 3: features.npy and the rest of an extract-style features dir; kept as they are
    when features_meta.json names the same views and the same trained variables."""
    meta_path, feat_path = (
        os.path.join(workdir, n) for n in ("features_meta.json", "features.npy")
    )
    meta_hash = shards.meta_hash({"views": vmeta["meta_hash"], "encoder": enc["variables_sha256"]})
    if os.path.isfile(meta_path) and os.path.isfile(feat_path):
        with open(meta_path) as f:
            old = json.load(f)
        if old.get("meta_hash") == meta_hash and old.get("features_sha256") == weights.sha256_file(
            feat_path
        ):
            return np.load(feat_path)
    t0 = time.time()
    features = adapt.adapted_features(
        model, variables, views, tuple(vmeta["map_shape"]), batch_size=int(config.batch_size)
    )
    if not np.all(np.isfinite(features)):
        raise UserError("non-finite adapted features: the training diverged; lower optim.lr")
    wall["features"] = time.time() - t0
    save_features(workdir, features, source.ids, source.labels)
    runs.save_catalog_columns(workdir, source.columns)
    # As `extract` writes it, so that the clustering, report and query modes read this dir
    # as any other (`config` names the adapted encoder: features_of_files rebuilds the network).
    meta_config = config.to_dict() | {"weights": enc_path(workdir), "weights_path": ""}
    atomic.write_json(
        meta_path,
        {
            "weights_sha256": enc["variables_sha256"],
            "ids_sha256": vmeta["ids_sha256"],
            "num_images": len(source),
            "source_image_shape": vmeta["source_image_shape"],
            "image_size": vmeta["image_size"],
            "crop_size": vmeta["crop_size"],
            "tta": True,
            "tta_pool": "mean",
            "dtype": "float32",
            "feature_source": "xception",
            "meta_hash": meta_hash,
            "features_sha256": weights.sha256_file(feat_path),
            "weights": f"adapted exit flow ({enc_path(workdir)})",
            "weights_kind": "adapt",
            "class_names": list(source.class_names),
            "feature_dim": int(features.shape[1]),
            "note": "from float16 cached middle-flow maps (phase 1), not from the images",
            "config": meta_config,
            "versions": versions(),
        },
    )
    return features


def enc_path(workdir: str) -> str:
    return os.path.join(workdir, "encoder.npz")

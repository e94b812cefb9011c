"""Mode `build_dataset`: build the Kaggle TFDS dataset, or check a folder/CSV dataset.

Either way it prints the class counts per split and writes them to <workdir>/dataset.json;
problems skipped under on_bad_input='skip' go to <workdir>/bad_input_report.json.
"""

from __future__ import annotations

import os

import numpy as np

from galaxy_jax import atomic as gio
from galaxy_jax import validate
from galaxy_jax.data import labels as L
from galaxy_jax.data.from_config import make_image_source
from galaxy_jax.errors import UserError


def _class_counts(source) -> dict[str, int]:
    if source.labels is None:
        return {"unlabelled": len(source)}
    counts = {name: int((source.labels == i).sum()) for i, name in enumerate(source.class_names)}
    if (source.labels < 0).any():
        counts["unlabelled"] = int((source.labels < 0).sum())
    return counts


def run_build_dataset(config, workdir: str) -> dict:
    """Builds or verifies config.data; returns {split: class counts} (also printed and saved)."""
    validate.build_dataset(config)
    data = config.data
    os.makedirs(workdir, exist_ok=True)
    report = os.path.join(workdir, "bad_input_report.json")
    summary = {"name": data.name, "splits": {}}
    if data.name == "galaxy_zoo":
        from galaxy_jax.data import galaxy_zoo

        builder = galaxy_zoo.build(data, report_path=report)
        print(f"Built {builder.info.full_name} in {builder.data_dir}")
        summary["label_rule"] = data.label_rule
        if data.label_rule == "clean":
            summary["clean_threshold"] = data.clean_threshold
        for split in builder.info.splits:
            _, _, _, counts = galaxy_zoo.labelled(data, split)
            counts["total"] = builder.info.splits[split].num_examples
            summary["splits"][split] = counts
            print(f"  {split:<10} {data.label_rule}: {L.format_counts(counts)}")
    elif data.name in ("folder", "csv"):
        data = data.copy_and_resolve_references()
        with data.unlocked():
            data.verify_images = True  # decode every image once: corrupt files surface now
        source = make_image_source(data, report_path=report)
        if data.name == "folder":  # per split folder; the ids say which file was kept
            splits = {p.split(os.sep)[-3] for p in source.get.paths}
            for split in sorted(splits):
                mask = np.asarray([p.split(os.sep)[-3] == split for p in source.get.paths])
                labels = source.labels[mask]
                summary["splits"][split] = {
                    n: int((labels == i).sum()) for i, n in enumerate(source.class_names)
                }
        else:
            summary["splits"]["all"] = _class_counts(source)
        for split, counts in summary["splits"].items():
            print(f"  {split:<10} {L.format_counts(counts)}")
    elif data.name == "synthetic":
        source = make_image_source(data)
        summary["splits"]["all"] = _class_counts(source)
        print(f"Synthetic galaxies need no build: {L.format_counts(summary['splits']['all'])}")
    else:
        make_image_source(data)  # raises the UserError that lists the known names
        raise UserError(f"build_dataset does not handle data.name {data.name!r}")
    gio.write_json(os.path.join(workdir, "dataset.json"), summary)
    return summary

"""Kaggle's "Galaxy Zoo - The Galaxy Challenge" (2014) as a TFDS dataset, stored as array_record.

array_record, not TFDS' default tfrecord: it builds and reads without TensorFlow, and gives the
random access `tfds.data_source` needs. The JPEG bytes are stored as they are (no
re-encoding), so the build is lossless; only non-RGB files are converted.

Build: `python main.py --config=configs/build_galaxy_zoo.py --workdir=DIR` (see MANUAL below).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import inspect
import io
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image
from tqdm import tqdm

from galaxy_jax.data import labels as L
from galaxy_jax.data.bad_input import BadInput, decode_image, read_csv
from galaxy_jax.data.image_source import ImageSource
from galaxy_jax.errors import UserError

IMAGE_SHAPE = (424, 424, 3)
IMAGES_NAME = "images_training_rev1"
CSV_NAME = "training_solutions_rev1.csv"
FILE_FORMAT = "array_record"

MANUAL = f"""\
Kaggle needs a login, so download by hand from
https://www.kaggle.com/c/galaxy-zoo-the-galaxy-challenge/data
and put into the manual directory (data.manual_dir, default
~/tensorflow_datasets/downloads/manual/galaxy_zoo):
  {IMAGES_NAME}.zip        (or the extracted folder {IMAGES_NAME}/ with the 61,578 JPEGs)
  {CSV_NAME}  (or training_solutions_rev1.zip holding it)
Nothing else is read; the test images (no votes) are not used."""


def split_of(galaxy_id: str, validation_fraction: float, test_fraction: float) -> str:
    """'train', 'validation' or 'test' from a hash of the GalaxyID: stable across machines,
    builds and orderings, and independent of which other galaxies are present."""
    h = int.from_bytes(hashlib.sha256(str(galaxy_id).encode()).digest()[:8], "big") / 2.0**64
    if h < test_fraction:
        return "test"
    return "validation" if h < test_fraction + validation_fraction else "train"


class GalaxyZooConfig(tfds.core.BuilderConfig):
    """Split fractions; everything not validation or test is train."""

    def __init__(self, *, validation_fraction: float = 0.1, test_fraction: float = 0.1, **kw):
        if not (
            0 <= validation_fraction
            and 0 <= test_fraction
            and validation_fraction + test_fraction < 1
        ):
            raise UserError(
                f"split fractions must be >= 0 and sum below 1, got validation "
                f"{validation_fraction}, test {test_fraction}"
            )
        name = f"val{round(validation_fraction * 1000):03d}_test{round(test_fraction * 1000):03d}"
        super().__init__(
            name=name,
            description=f"validation {validation_fraction}, test "
            f"{test_fraction} of GalaxyIDs by hash",
            **kw,
        )
        self.validation_fraction, self.test_fraction = validation_fraction, test_fraction


class GalaxyZooChallenge(tfds.core.GeneratorBasedBuilder):
    """Kaggle Galaxy Zoo training images with their 37 Galaxy Zoo 2 vote fractions."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL
    BUILDER_CONFIGS = [GalaxyZooConfig()]

    def __init__(self, *, on_bad_input: str = "raise", report_path: str | None = None, **kw):
        self._bad = BadInput(on_bad_input)
        self._report_path = report_path
        kw.setdefault("file_format", FILE_FORMAT)
        super().__init__(**kw)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # TFDS 4.9.10's version of this touches `importlib_resources`, which it only installs on
        # Python < 3.9; the plain file path is what it computes anyway.
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=IMAGE_SHAPE, encoding_format="jpeg"),
                    "galaxy_id": np.int64,
                    # The 37 fractions in the CSV's column order: labels.VOTE_COLUMNS.
                    "votes": tfds.features.Tensor(shape=(len(L.VOTE_COLUMNS),), dtype=np.float32),
                }
            ),
            supervised_keys=None,
            homepage="https://www.kaggle.com/c/galaxy-zoo-the-galaxy-challenge",
            description="61,578 SDSS cutouts (424x424 JPEG) with Galaxy Zoo 2 vote fractions.",
        )

    def _split_generators(self, dl_manager):
        images, votes = _read_manual_dir(dl_manager.manual_dir, self._bad)
        cfg = self.builder_config
        members = {s: [] for s in ("train", "validation", "test")}
        for gid in sorted(votes, key=int):
            members[split_of(gid, cfg.validation_fraction, cfg.test_fraction)].append(gid)
        self._bad.finish(self._report_path, kept=len(votes))
        for s in [s for s, ids in members.items() if not ids]:  # TFDS cannot write empty splits
            logging.warning("Galaxy Zoo split %r is empty and is left out", s)
            del members[s]
        return {
            s: self._generate_examples(images, {g: votes[g] for g in ids})
            for s, ids in members.items()
        }

    def _generate_examples(self, images: _ImageStore, votes: dict):
        for gid, v in votes.items():  # every image was decoded once in _split_generators
            data = images.fixed.get(gid) or images.read(gid)
            yield gid, {"image": data, "galaxy_id": int(gid), "votes": v}


def _checked_jpeg(data: bytes, gid: str):
    """The JPEG bytes if they decode to 424x424 RGB, re-encoded RGB for grayscale/RGBA files."""
    try:
        image = decode_image(data, f"{gid}.jpg")
    except UserError as e:
        return e
    if image.shape != IMAGE_SHAPE:
        return UserError(f"{gid}.jpg: image is {image.shape}, expected {IMAGE_SHAPE}")
    with Image.open(io.BytesIO(data)) as im:
        if im.mode == "RGB" and im.format == "JPEG":
            return data
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=95)
    return out.getvalue()


class _ImageStore:
    """GalaxyID -> JPEG bytes, from the zip or the extracted folder."""

    def __init__(self, path: str):
        self.path = path
        self.fixed: dict[str, bytes] = {}  # GalaxyID -> re-encoded RGB JPEG
        if zipfile.is_zipfile(path):
            self.zip = zipfile.ZipFile(path)
            names = [n for n in self.zip.namelist() if n.lower().endswith(".jpg")]
            self.where = {os.path.splitext(os.path.basename(n))[0]: n for n in names}
        else:
            self.zip = None
            self.where = {
                os.path.splitext(n)[0]: os.path.join(path, n)
                for n in os.listdir(path)
                if n.lower().endswith(".jpg")
            }

    def read(self, gid: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(self.where[gid])
            with open(self.where[gid], "rb") as f:
                return f.read()
        except (OSError, zipfile.BadZipFile, KeyError) as e:
            return f"unreadable: {e}".encode()  # fails decoding next, naming the file


def _find(manual_dir, names, what):
    for n in names:
        p = os.path.join(manual_dir, n)
        if os.path.exists(p):
            return p
    raise UserError(f"{manual_dir}: no {what} (looked for {', '.join(names)}).\n{MANUAL}")


def _read_manual_dir(manual_dir, bad: BadInput) -> tuple[_ImageStore, dict]:
    """Checks the CSV and the image list against each other; returns images and {id: votes}."""
    manual_dir = os.fspath(manual_dir)
    if not os.path.isdir(manual_dir):
        raise UserError(f"manual directory {manual_dir} does not exist.\n{MANUAL}")
    csv_path = _find(manual_dir, [CSV_NAME, "training_solutions_rev1.zip"], "vote CSV")
    if csv_path.endswith(".zip"):
        with zipfile.ZipFile(csv_path) as z:
            inner = [n for n in z.namelist() if n.endswith(".csv")]
            if not inner:
                raise UserError(f"{csv_path}: no .csv inside")
            extracted = os.path.join(manual_dir, ".extracted-" + os.path.basename(inner[0]))
            if not os.path.exists(extracted):
                with z.open(inner[0]) as src, open(extracted + ".tmp", "wb") as dst:
                    dst.write(src.read())
                os.replace(extracted + ".tmp", extracted)
            csv_path = extracted
    images = _ImageStore(_find(manual_dir, [IMAGES_NAME + ".zip", IMAGES_NAME], "images"))
    if not images.where:
        raise UserError(f"{images.path}: empty, no .jpg images")
    header, rows = read_csv(csv_path, (L.ID_COLUMN,) + L.VOTE_COLUMNS, "vote")
    cols = [header.index(c) for c in (L.ID_COLUMN,) + L.VOTE_COLUMNS]
    ids, values, row_nos = [], [], []
    for row_no, row in enumerate(rows, start=2):
        if len(row) != len(header):
            bad.add(csv_path, f"row has {len(row)} fields, the header {len(header)}", row=row_no)
            continue
        try:
            gid = str(int(row[cols[0]]))
            v = [float(row[c]) if row[c].strip() else float("nan") for c in cols[1:]]
        except ValueError as e:
            bad.add(csv_path, f"not a number ({e})", row=row_no, id=row[cols[0]])
            continue
        ids.append(gid)
        values.append(v)
        row_nos.append(row_no)
    values = np.asarray(values, np.float32).reshape(-1, len(L.VOTE_COLUMNS))
    for p in L.check_vote_rows(values, ids, csv_path):
        p["row"] = row_nos[p["row"] - 2]
        bad.add(p["file"], p["problem"], row=p["row"], id=p["id"])
    skip = bad.bad_ids()
    votes = {}
    for gid, v, row_no in zip(ids, values, row_nos, strict=True):
        if gid in skip:
            continue
        if gid not in images.where:
            bad.add(csv_path, f"no image {gid}.jpg in {images.path}", row=row_no, id=gid)
            continue
        votes[gid] = v
    for gid in sorted(set(images.where) - set(ids)):
        bad.add(
            os.path.join(images.path, images.where[gid]), f"image has no row in {csv_path}", id=gid
        )
    if not votes:
        raise UserError(f"{csv_path}: no row matches an image in {images.path}")
    # Decode every image now: an error must surface before TFDS starts writing, and in 'skip'
    # mode the split lists must already exclude bad files.
    order, chunk = sorted(votes, key=int), 512
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        for start in tqdm(range(0, len(order), chunk), desc="decode check", unit_scale=chunk):
            batch = order[start : start + chunk]
            raw = [images.read(g) for g in batch]  # zip reads stay in this thread
            for gid, data, checked in zip(
                batch, raw, pool.map(_checked_jpeg, raw, batch), strict=True
            ):
                if isinstance(checked, UserError):
                    bad.add(images.where.get(gid, gid), str(checked).split(": ", 1)[-1], id=gid)
                    del votes[gid]
                elif checked is not data:  # grayscale/RGBA/PNG re-encoded as RGB JPEG
                    images.fixed[gid] = checked
    logging.info("Galaxy Zoo: %d galaxies with votes and a readable image", len(votes))
    return images, votes


def make_builder(data_config, *, on_bad_input=None, report_path=None) -> GalaxyZooChallenge:
    """The builder for data_config's split fractions, data dir and bad-input policy."""
    cfg = GalaxyZooConfig(
        validation_fraction=data_config.validation_fraction,
        test_fraction=data_config.test_fraction,
    )
    # TFDS insists on the very object when a config's name is one of BUILDER_CONFIGS.
    cfg = next((c for c in GalaxyZooChallenge.BUILDER_CONFIGS if c.name == cfg.name), cfg)
    return GalaxyZooChallenge(
        data_dir=os.path.expanduser(data_config.tfds_data_dir),
        config=cfg,
        on_bad_input=on_bad_input or data_config.on_bad_input,
        report_path=report_path,
    )


def build(data_config, report_path: str | None = None) -> GalaxyZooChallenge:
    """Builds (once) the array_record dataset from data_config.manual_dir.

    TFDS writes into '<version dir>.incomplete.*' and renames it only after every split is done,
    and deletes it on any error, so a half-built dataset never looks complete.
    """
    manual_dir = os.path.expanduser(data_config.manual_dir)
    if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
        raise UserError(f"data.manual_dir {manual_dir} does not exist or is empty.\n{MANUAL}")
    builder = make_builder(data_config, report_path=report_path)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
        file_format=FILE_FORMAT,
    )
    return builder


def _data_source(data_config, split: str, decoders=None):
    builder = make_builder(data_config)
    if not builder.is_prepared():
        raise UserError(
            f"The Galaxy Zoo dataset {builder.info.full_name} is not built in "
            f"{data_config.tfds_data_dir}; run `python main.py "
            "--config=configs/build_galaxy_zoo.py --workdir=DIR` first."
        )
    try:
        return tfds.data_source(
            builder.name,  # the config object (split fractions) travels in builder_kwargs
            split=split,
            data_dir=os.path.expanduser(data_config.tfds_data_dir),
            download=False,
            decoders=decoders,
            builder_kwargs={"config": builder.builder_config},
        )
    except ValueError as e:  # an unknown split name or a bad slice
        raise UserError(f"data.tfds_split {split!r}: {e}") from None


def read_votes(data_config, split: str) -> tuple[np.ndarray, np.ndarray]:
    """([N] int64 GalaxyIDs, [N, 37] float32 votes) of a built split, without decoding images."""
    ds = _data_source(data_config, split, decoders={"image": tfds.decode.SkipDecoding()})
    n, chunk = len(ds), 4096
    ids, votes = np.empty(n, np.int64), np.empty((n, len(L.VOTE_COLUMNS)), np.float32)
    for start in range(0, n, chunk):
        records = ds.__getitems__(list(range(start, min(n, start + chunk))))
        ids[start : start + len(records)] = [r["galaxy_id"] for r in records]
        votes[start : start + len(records)] = [r["votes"] for r in records]
    return ids, votes


class TfdsImages:
    """Picklable `get` over a TFDS data source: indices -> [B, 424, 424, 3] uint8.

    The data source opens lazily in each process (worker processes pickle this object).
    """

    def __init__(self, data_config, split: str, records: np.ndarray):
        self.data_config, self.split, self.records = data_config, split, records
        self._ds = None

    def __getstate__(self):
        return {**self.__dict__, "_ds": None}

    def __call__(self, indices) -> np.ndarray:
        if self._ds is None:
            self._ds = _data_source(self.data_config, self.split)
        rec = self.records[np.atleast_1d(np.asarray(indices))]
        return np.stack([r["image"] for r in self._ds.__getitems__(rec.tolist())])


def labelled(data_config, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(record indices, GalaxyIDs, labels, counts) of `split` under data_config.label_rule."""
    ids, votes = read_votes(data_config, split)
    labels = L.apply_label_rule(votes, data_config.label_rule, data_config.clean_threshold)
    counts = L.label_counts(votes, labels, data_config.label_rule)
    keep = np.flatnonzero(labels != L.EXCLUDED)
    return keep, ids[keep], labels[keep], counts


def make_galaxy_zoo_source(data_config) -> ImageSource:
    """The built Kaggle dataset's `data_config.tfds_split`, labelled by `label_rule`.

    Galaxies the rule excludes are left out, and their number is printed with the class counts.
    """
    split = data_config.tfds_split
    records, ids, labels, counts = labelled(data_config, split)
    print(f"galaxy_zoo {split} ({data_config.label_rule}): {L.format_counts(counts)}")
    return ImageSource(
        ids.astype(str),
        labels,
        L.CLASS_NAMES,
        TfdsImages(data_config, split, records),
        IMAGE_SHAPE,
    )

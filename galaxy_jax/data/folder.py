"""Users' own images: a class-per-folder tree, or a folder of images plus a CSV of ids.

  folder:  <root>/<split>/<class>/<id>.jpg   (e.g. ../shared/data/galaxy_zoo_kaggle_sample/images)
  csv:     <image_dir>/<id><ext> and a CSV with an id column and an optional label column;
           without labels the data is still fine for clustering (labels None, or -1 per row).

Each file may be a JPEG or PNG, a FITS cutout (galaxy_jax.data.fits: stretched to RGB), or a
`.npy` array (uint8 [H, W] / [H, W, 3] as an image; float [H, W] / [bands, H, W] as flux,
stretched like FITS; read with allow_pickle=False, so nothing in a user's data executes code).
A catalog row may also name one file per band (galaxy_jax.data.catalog).

Listing, duplicate ids and CSV problems are checked when the source is made. Decoding happens in
`get`; with verify_images=True every image is decoded once up front, so corrupt files are found
(and, with on_bad_input='skip', left out and reported) before a long run starts.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np
from tqdm import tqdm

from galaxy_jax.data import fits
from galaxy_jax.data.bad_input import BadInput, decode_image, read_csv
from galaxy_jax.data.image_source import ImageSource
from galaxy_jax.data.preprocess import to_rgb_np
from galaxy_jax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if not size or image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def read_image_file(path, decode_size: int = 0, fits_reader=None) -> np.ndarray:
    """One galaxy's file(s) -> [H, W, 3] uint8 (module docstring); UserError naming the file.

    path: a JPEG/PNG/FITS/.npy path, or a tuple of single-band FITS/.npy paths (one per band).
    """
    reader = fits_reader or fits.FitsReader(fits.FitsOptions())
    if isinstance(path, (tuple, list)):
        bands = [
            _npy(p) if str(p).lower().endswith(".npy") else fits.read_bands(p, reader.options.hdu)
            for p in path
        ]
        if len({b.shape[-2:] for b in bands}) > 1:
            raise UserError(f"{', '.join(path)}: bands of different shapes")
        image = reader.from_bands(
            np.concatenate([b.reshape(-1, *b.shape[-2:]) for b in bands]), ",".join(path)
        )
    elif fits.is_fits(path):
        image = reader(path)
    elif str(path).lower().endswith(".npy"):
        array = _npy(path)
        if array.dtype == np.uint8:
            try:
                image = to_rgb_np(array)
            except ValueError as e:
                raise UserError(f"{path}: {e}") from None
        else:
            image = reader.from_bands(array, path)
    else:
        return decode_image(path, path, decode_size)
    return _resize(image, decode_size)


def _npy(path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # a pickled object array is refused, unrun
        raise UserError(f"{path}: cannot read .npy ({type(e).__name__}: {e})") from None


class FileDecoder:
    """Picklable `get`: indices -> [B, H, W, 3] uint8 decoded from `paths`.

    Every image must decode to `image_shape`, unless `decode_size` > 0 resizes all of them to a
    square of that side (survey cutouts of mixed sizes).
    """

    def __init__(self, paths, image_shape, decode_size: int = 0, fits_reader=None):
        self.paths, self.image_shape, self.decode_size = list(paths), image_shape, decode_size
        self.fits_reader = fits_reader

    def decode(self, i: int) -> np.ndarray:
        path = self.paths[int(i)]
        image = read_image_file(path, self.decode_size, self.fits_reader)
        if image.shape != self.image_shape:
            raise UserError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]}, the dataset's first image is "
                f"{self.image_shape[1]}x{self.image_shape[0]}; set data.decode_size to resize all"
            )
        return image

    def __call__(self, indices) -> np.ndarray:
        return np.stack([self.decode(i) for i in np.atleast_1d(np.asarray(indices))])


def _first_shape(paths, decode_size, fits_reader=None):
    if decode_size:
        return (decode_size, decode_size, 3)
    return read_image_file(paths[0], 0, fits_reader).shape


def _verify(paths, ids, bad: BadInput, decoder: FileDecoder) -> np.ndarray:
    """Decodes every image once (threads: PIL releases the GIL); returns the mask of good ones."""

    def check(i):
        try:
            decoder.decode(i)
            return None
        except UserError as e:
            return str(e)

    ok = np.ones(len(paths), bool)
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        errors = pool.map(check, range(len(paths)))
        for i, err in enumerate(tqdm(errors, total=len(paths), desc="verify images")):
            if err is not None:
                bad.add(paths[i], err.split(": ", 1)[-1], id=ids[i])
                ok[i] = False
    return ok


def _finish(
    paths, ids, labels, class_names, bad, data_config, report_path, columns=None, fits_reader=None
) -> ImageSource:
    """The ImageSource of the rows not reported bad (and, with verify_images, that decode).
    columns: {name: [N] array} of catalog columns, kept row for row with the ids."""
    keep = np.ones(len(paths), bool)
    bad_ids = bad.bad_ids()
    keep &= np.asarray([i not in bad_ids for i in ids], bool)

    def subset(mask):
        nonlocal paths, ids, labels, columns
        paths = [p for p, k in zip(paths, mask, strict=True) if k]
        ids, labels = np.asarray(ids)[mask], None if labels is None else np.asarray(labels)[mask]
        columns = None if columns is None else {k: np.asarray(v)[mask] for k, v in columns.items()}

    subset(keep)
    if not paths:
        raise UserError("no usable images left after skipping bad input; see the report")
    size = data_config.decode_size
    decoder = FileDecoder(paths, _first_shape(paths, size, fits_reader), size, fits_reader)
    if data_config.verify_images:
        ok = _verify(paths, ids, bad, decoder)
        if not ok.all():
            subset(ok)
            decoder = FileDecoder(paths, decoder.image_shape, size, fits_reader)
    bad.finish(report_path, kept=len(paths))
    return ImageSource(
        ids.astype(str), labels, tuple(class_names), decoder, decoder.image_shape, columns
    )


def make_folder_source(data_config, report_path: str | None = None) -> ImageSource:
    """<root>/<split>/<class>/<id>.<jpg|jpeg|png>; data_config.split ('' for all) picks splits.

    class_names are the sorted class folder names, shared across splits.
    """
    root = os.path.expanduser(data_config.folder)
    if not root or not os.path.isdir(root):
        raise UserError(f"data.folder is not a directory: {root!r}")
    splits = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not splits:
        raise UserError(f"{root}: empty folder; expected <split>/<class>/<id>.jpg inside it")
    wanted = [s for s in str(data_config.split).split(",") if s] or splits
    unknown = [s for s in wanted if s not in splits]
    if unknown:
        raise UserError(f"{root}: no split folder {', '.join(unknown)}; found {', '.join(splits)}")
    class_names = sorted(
        {
            c
            for s in splits
            for c in os.listdir(os.path.join(root, s))
            if os.path.isdir(os.path.join(root, s, c))
        }
    )
    if not class_names:
        raise UserError(f"{root}: no class folders; expected <split>/<class>/<id>.jpg")
    bad = BadInput(data_config.on_bad_input)
    paths, ids, labels, first = [], [], [], {}
    for s in wanted:
        for label, c in enumerate(class_names):
            directory = os.path.join(root, s, c)
            if not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                path = os.path.join(directory, name)
                stem, ext = os.path.splitext(name)
                if ext.lower() not in IMAGE_EXTENSIONS or not os.path.isfile(path):
                    continue
                if stem in first:
                    bad.add(
                        path, f"duplicate id {stem} (also {first[stem]}; both left out)", id=stem
                    )
                    continue
                first[stem] = path
                paths.append(path)
                ids.append(stem)
                labels.append(label)
    if not paths:
        raise UserError(
            f"{root}: no {'/'.join(IMAGE_EXTENSIONS)} images under {', '.join(wanted)}/<class>/"
        )
    return _finish(
        paths, ids, np.asarray(labels, np.int32), class_names, bad, data_config, report_path
    )


def make_csv_source(data_config, report_path: str | None = None) -> ImageSource:
    """Images <image_dir>/<id><image_ext> listed in data_config.csv_path.

    The CSV needs `id_column`; `label_column` ('' for none) holds class names, empty cells are
    unknown (-1). Rows without an image, images without a row and duplicate ids are bad input.
    """
    image_dir = os.path.expanduser(data_config.image_dir)
    if not os.path.isdir(image_dir):
        raise UserError(f"data.image_dir is not a directory: {image_dir!r}")
    id_col, label_col = data_config.id_column, data_config.label_column
    csv_path = os.path.expanduser(data_config.csv_path)
    header, rows = read_csv(csv_path, (id_col,) + ((label_col,) if label_col else ()), "data.csv")
    ext = data_config.image_ext
    on_disk = {os.path.splitext(n)[0] for n in os.listdir(image_dir) if n.endswith(ext)}
    if not on_disk:
        raise UserError(f"{image_dir}: empty folder, no *{ext} images")
    bad = BadInput(data_config.on_bad_input)
    id_i = header.index(id_col)
    label_i = header.index(label_col) if label_col else None
    paths, ids, raw_labels, seen = [], [], [], {}
    for row_no, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(header):
            bad.add(csv_path, f"row has {len(row)} fields, the header {len(header)}", row=row_no)
            continue
        gid = row[id_i].strip()
        if not gid:
            bad.add(csv_path, f"empty {id_col}", row=row_no)
            continue
        if gid in seen:
            bad.add(
                csv_path,
                f"duplicate id {gid} (also row {seen[gid]}; both left out)",
                row=row_no,
                id=gid,
            )
            continue
        seen[gid] = row_no
        if gid not in on_disk:
            bad.add(csv_path, f"no image {gid}{ext} in {image_dir}", row=row_no, id=gid)
            continue
        paths.append(os.path.join(image_dir, gid + ext))
        ids.append(gid)
        raw_labels.append(row[label_i].strip() if label_i is not None else "")
    for stem in sorted(on_disk - set(seen)):
        bad.add(os.path.join(image_dir, stem + ext), f"image has no row in {csv_path}", id=stem)
    if not paths:
        raise UserError(f"{csv_path}: no row matches an image in {image_dir}")
    labels, class_names = None, ()
    if label_i is not None:
        class_names = tuple(sorted({v for v in raw_labels if v}))
        index = {c: i for i, c in enumerate(class_names)}
        labels = np.asarray([index.get(v, -1) for v in raw_labels], np.int32)
    return _finish(paths, ids, labels, class_names, bad, data_config, report_path)

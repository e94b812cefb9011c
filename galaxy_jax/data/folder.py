"""Users' own images: a class-per-folder tree, or a folder of images plus a CSV of ids.

  folder:  <root>/<split>/<class>/<id>.jpg   (e.g. ../shared/data/galaxy_zoo_kaggle_sample/images)
  csv:     <image_dir>/<id><ext> and a CSV with an id column and an optional label column;
           without labels the data is still fine for clustering (labels None, or -1 per row).

Listing, duplicate ids and CSV problems are checked when the source is made. Decoding happens in
`get`; with verify_images=True every image is decoded once up front, so corrupt files are found
(and, with on_bad_input='skip', left out and reported) before a long run starts.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np
from tqdm import tqdm

from galaxy_jax.data.bad_input import BadInput, decode_image, read_csv
from galaxy_jax.data.image_source import ImageSource
from galaxy_jax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class FileDecoder:
    """Picklable `get`: indices -> [B, H, W, 3] uint8 decoded from `paths`.

    Every image must decode to `image_shape`, unless `decode_size` > 0 resizes all of them to a
    square of that side (survey cutouts of mixed sizes).
    """

    def __init__(self, paths, image_shape, decode_size: int = 0):
        self.paths, self.image_shape, self.decode_size = list(paths), image_shape, decode_size

    def decode(self, i: int) -> np.ndarray:
        path = self.paths[int(i)]
        image = decode_image(path, path, self.decode_size)
        if image.shape != self.image_shape:
            raise UserError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]}, the dataset's first image is "
                f"{self.image_shape[1]}x{self.image_shape[0]}; set data.decode_size to resize all"
            )
        return image

    def __call__(self, indices) -> np.ndarray:
        return np.stack([self.decode(i) for i in np.atleast_1d(np.asarray(indices))])


def _first_shape(paths, decode_size):
    if decode_size:
        return (decode_size, decode_size, 3)
    return decode_image(paths[0], paths[0]).shape


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


def _finish(paths, ids, labels, class_names, bad, data_config, report_path) -> ImageSource:
    keep = np.ones(len(paths), bool)
    bad_ids = bad.bad_ids()
    keep &= np.asarray([i not in bad_ids for i in ids], bool)
    paths = [p for p, k in zip(paths, keep, strict=True) if k]
    ids, labels = np.asarray(ids)[keep], None if labels is None else np.asarray(labels)[keep]
    if not paths:
        raise UserError("no usable images left after skipping bad input; see the report")
    decoder = FileDecoder(
        paths, _first_shape(paths, data_config.decode_size), data_config.decode_size
    )
    if data_config.verify_images:
        ok = _verify(paths, ids, bad, decoder)
        if not ok.all():
            paths = [p for p, k in zip(paths, ok, strict=True) if k]
            ids, labels = ids[ok], None if labels is None else labels[ok]
            decoder = FileDecoder(paths, decoder.image_shape, data_config.decode_size)
    bad.finish(report_path, kept=len(paths))
    return ImageSource(ids.astype(str), labels, tuple(class_names), decoder, decoder.image_shape)


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

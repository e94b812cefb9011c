"""The interactive map (galaxy_jax/explore.py), driven in a real headless Chromium.

The page is built from a tiny run (40 synthetic galaxies, a fabricated 2-cluster DEC result with
catalog columns) and opened from a file:// URL with no network. Without Chromium and its driver
(Debian packages chromium, chromium-driver; .ci/run installs them) the browser tests skip.
"""

import json
import os
import shutil
import tempfile
import time

import numpy as np
import pytest

from configs import extract as extract_config
from configs import map as map_config
from galaxy_jax import explore, modes, runs

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
N = 40


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("map")
    c = extract_config.get_config("pixels_smoke")
    c.data.synthetic_n, c.data.image_size, c.data.crop_size = N, 32, 0
    c.shard_size, c.batch_size = N, 8
    feat = str(root / "features")
    modes.get("extract")(c, feat)
    import pyarrow as pa
    import pyarrow.parquet

    ra = 150 + np.arange(N) / 10
    pyarrow.parquet.write_table(
        pa.table({"ra": ra, "dec": -np.arange(N) / 10.0}),
        os.path.join(feat, runs.CATALOG_COLUMNS),
    )
    run = root / "run"
    run.mkdir()
    y = np.load(os.path.join(feat, "labels.npy"))
    z = (np.eye(3)[y] * 4 + np.random.default_rng(0).normal(0, 0.5, (N, 3))).astype(np.float32)
    q = np.full((N, 2), 0.1, np.float32)
    q[np.arange(N), y] = 0.9
    for name, a in (("q", q), ("embedding", z), ("assignments", y.astype(np.int32))):
        np.save(run / f"{name}.npy", a)
    results = {"seed": 0, "config": {"mode": "dec", "data": {"name": "features", "path": feat}}}
    (run / "results.json").write_text(json.dumps(results))
    m = map_config.get_config()
    m.run, m.layout_iters = str(run), 250
    info = modes.get("map")(m, str(root / "out"))
    return info, run, y


def test_map_files_and_saved_layout(page):
    info, run, _ = page
    assert info["points"] == N and not info["sampled"]
    assert os.path.isfile(info["path"]) and (run / "map_2d.npz").is_file()
    html = open(info["path"]).read()
    assert "cdn.bokeh.org" not in html and "<script" in html  # the JavaScript is inlined
    sprites = os.path.join(os.path.dirname(info["path"]), "map_files", "sprite_0.jpg")
    assert os.path.isfile(sprites)


def test_sampling_beyond_max_points_says_so(tmp_path):
    xy = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    info = explore.write_map(
        str(tmp_path / "m.html"),
        xy,
        np.arange(300).astype(str),
        lambda r: np.zeros((len(r), 8, 8, 3), np.uint8),
        max_points=50,
    )
    assert info["points"] == 50 and info["sampled"]
    assert "Showing 50 of 300 galaxies (a seeded random sample" in open(tmp_path / "m.html").read()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"  # selenium never looks for a driver online
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp()
    for flag in (*explore.CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


_FIND = explore.JS_FIND_MAP
_POINT = explore.JS_POINT_ON_PAGE
# Text and thumbnails anywhere in the page, Bokeh's shadow roots included.
_SEARCH = """
const out = {tip: [], thumb: [], panel: '', button: null};
function walk(root) { for (const el of root.querySelectorAll('*')) {
  const c = el.classList;
  if (c && c.contains('tip-id')) out.tip.push(el.textContent);
  if (c && c.contains('tip-col')) out.tip.push(el.textContent);
  if (c && c.contains('thumb'))
    out.thumb.push(el.style.backgroundImage + ' ' + el.style.backgroundPosition);
  if (el.tagName === 'BUTTON' && el.textContent.includes('Export selected')) out.button = el;
  if (el.shadowRoot) walk(el.shadowRoot); } }
walk(document);
return out;
"""


def _open(browser, info):
    browser.get("file://" + info["path"])
    for _ in range(100):
        if browser.execute_script("return !!(window.Bokeh && Bokeh.documents.length)"):
            break
        time.sleep(0.1)
    time.sleep(1.0)  # first render


def test_page_loads_offline_without_errors_and_draws_every_point(page, browser, tmp_path):
    info, _, _ = page
    _open(browser, info)
    n = browser.execute_script(_FIND + "return view.renderer_views ? src.data.x.length : -1;")
    drawn = browser.execute_script(
        _FIND + "return [...view.renderer_views.values()].map(r => r.glyph?.data_size ?? 0);"
    )
    assert n == N and N in drawn
    shot = tmp_path / "map.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_hover_shows_the_galaxys_thumbnail_id_and_catalog_columns(page, browser):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    info, _, _ = page
    _open(browser, info)
    data = browser.execute_script(_FIND + "return [src.data.id, src.data.bgpos];")
    for i in (3, 17):
        x, y = browser.execute_script(_POINT, i)
        action = ActionBuilder(browser)
        action.pointer_action.move_to_location(int(round(x)), int(round(y)))
        action.perform()
        time.sleep(0.4)
        found = browser.execute_script(_SEARCH)
        assert f"id {data[0][i]}" in found["tip"], (i, found["tip"])
        assert any(data[1][i] in t and "sprite_0.jpg" in t for t in found["thumb"]), found
        row = int(data[0][i].rsplit("-", 1)[1])  # synthetic-0-<row>
        assert f"ra: {150 + row / 10:g}" in " ".join(found["tip"]), found["tip"]


def test_click_shows_neighbours_and_colour_switches(page, browser):
    info, _, y = page
    _open(browser, info)
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    x, y = browser.execute_script(_POINT, 5)
    click = ActionBuilder(browser)
    click.pointer_action.move_to_location(int(round(x)), int(round(y))).click()
    click.perform()
    time.sleep(0.4)  # CustomJS callbacks run asynchronously
    text = browser.execute_script(_FIND + "return doc.get_model_by_name('panel').text;")
    ids = browser.execute_script(_FIND + "return src.data.id;")
    assert browser.execute_script(_FIND + "return src.selected.indices;") == [5]
    assert ids[5] in text and "nearest neighbours" in text and text.count("background-image") == 9
    browser.execute_script(_FIND + "doc.get_model_by_name('colour_by').value = 'true label';")
    time.sleep(0.3)
    colours = browser.execute_script(_FIND + "return [src.data.colour, src.data.c_label];")
    assert colours[0] == colours[1]


def test_selection_export_holds_the_selected_ids(page, browser):
    info, _, _ = page
    _open(browser, info)
    ids = browser.execute_script(_FIND + "src.selected.indices = [1, 7, 30]; return src.data.id;")
    button = browser.execute_script(_SEARCH)["button"]
    button.click()
    time.sleep(0.3)
    text = browser.execute_script("return window.galaxyMapExport;")
    assert text.splitlines() == ["id", ids[1], ids[7], ids[30]]

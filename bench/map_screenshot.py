"""A PNG of an interactive map (galaxy_jax/explore.py) in headless Chromium, one galaxy hovered.

  python bench/map_screenshot.py workdirs/map_sample/map.html docs/images/map_sample.png --hover 0
Needs Debian's chromium and chromium-driver, and selenium (the test extra).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from galaxy_jax.explore import CHROMIUM_FLAGS, JS_POINT_ON_PAGE  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("page")
    p.add_argument("png")
    p.add_argument("--hover", type=int, default=0, help="index of the point to hover")
    a = p.parse_args()
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp()
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get("file://" + os.path.abspath(a.page))
        time.sleep(2)
        x, y = driver.execute_script(JS_POINT_ON_PAGE, a.hover)
        action = ActionBuilder(driver)
        action.pointer_action.move_to_location(int(round(x)), int(round(y)))
        action.perform()
        time.sleep(0.5)
        os.makedirs(os.path.dirname(os.path.abspath(a.png)), exist_ok=True)
        driver.save_screenshot(a.png)
        print("wrote", a.png)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()

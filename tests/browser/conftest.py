"""A real headless Chromium for the /ui page's tests: Debian's ``chromium`` and ``chromium-driver``,
installed with apt-get when missing (CI runs the suite as root), driven by selenium through
``/usr/bin/chromedriver`` so that selenium-manager never downloads a browser or a driver.

A Chromium that cannot be installed fails the tests with the reason: the page must be tested in a real
browser, so skipping would hide a missing test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_PACKAGES = ["chromium", "chromium-driver"]
APT_SECONDS = 900
WINDOW = (1400, 1000)
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], env=env, capture_output=True, text=True, timeout=APT_SECONDS, check=False
    )


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver unless both are there; fail with the reason if not."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if shutil.which("apt-get") is None:
        pytest.fail(
            f"The /ui tests need {CHROMIUM} and {CHROMEDRIVER} (Debian's {' and '.join(APT_PACKAGES)}), "
            "and apt-get is not available to install them: install them, then run the tests again."
        )
    install = ("install", "-y", "--no-install-recommends", *APT_PACKAGES)
    done = _apt(*install)
    if done.returncode != 0:  # a stale package index: refresh it once and try again
        _apt("update")
        done = _apt(*install)
    if done.returncode != 0 or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"Could not install {' and '.join(APT_PACKAGES)} with apt-get (exit {done.returncode}; it needs "
            f"root): {(done.stderr or done.stdout).strip()[-800:]}"
        )


@pytest.fixture(scope="session")
def chromium() -> None:
    ensure_chromium()


def make_driver(user_data_dir: Path, download_dir: Path) -> webdriver.Chrome:
    """Headless Chromium with its performance log on (every request the page makes is recorded)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(download_dir), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # Belt and braces: with the browser and driver given, selenium-manager has nothing to fetch, and
    # offline it could not.
    offline, os.environ["SE_OFFLINE"] = os.environ.get("SE_OFFLINE"), "true"
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    finally:
        if offline is None:
            del os.environ["SE_OFFLINE"]
        else:
            os.environ["SE_OFFLINE"] = offline
    # Headless Chromium downloads only where it is told to.
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)}
    )
    return driver


@pytest.fixture(scope="module")
def browser_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tmp_path_factory.mktemp("chromium-profile"), tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(chromium: None, browser_dirs: tuple[Path, Path]) -> Iterator[webdriver.Chrome]:
    driver = make_driver(*browser_dirs)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def download_dir(browser_dirs: tuple[Path, Path]) -> Path:
    return browser_dirs[1]

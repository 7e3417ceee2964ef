"""Debian's chromium driven headless by selenium: the report page as a person's browser shows it."""

from __future__ import annotations

from pathlib import Path

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def chrome(binary: str, profile: Path, log_network: bool = False):
    """A headless Chrome with a private profile; quit() it when done."""
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1100,2000", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    if log_network:
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)

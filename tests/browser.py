"""Headless Chromium for the browser tests: Debian's chromium, and chromium-driver over the W3C WebDriver
protocol (plain HTTP: no new Python dependency). .ci/run installs both, so under CI their absence fails
instead of skipping."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.factories import free_port

INSTALL = "apt-get install -y chromium chromium-driver"


def programs(*names: str) -> list[str]:
    """The paths of Debian's browser programs ("chromium", "chromedriver"): skipped where absent, failed under CI."""
    paths = [shutil.which(name) for name in names]
    if None in paths:
        missing = ", ".join(n for n, p in zip(names, paths) if p is None)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing} not installed ({INSTALL}); CI must run the browser tests")
        pytest.skip(f"{missing} not installed ({INSTALL})")
    return paths


def rendered_dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran and its GraphQL queries answered (virtual time lets the
    React app settle before the dump)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom"]
    return subprocess.run([*programs("chromium"), *flags, url], capture_output=True, text=True, timeout=120,
                          check=True).stdout


class Session:
    """One browser session: ``call`` sends a WebDriver command relative to it."""

    def __init__(self, port: int):
        self.port, self.base = port, ""

    def call(self, method: str, path: str, body=None):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{self.base}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def open(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    def script(self, js: str, *args):
        return self.call("POST", "/execute/sync", {"script": js, "args": list(args)})

    def element(self, css: str) -> str:
        return next(iter(self.call("POST", "/element", {"using": "css selector", "value": css}).values()))

    def wait_for(self, js: str, what: str, timeout_s: float = 90):
        """The first truthy value of the script, polled while a page's scripts render it."""
        deadline = time.time() + timeout_s
        while not (value := self.script(js)):
            if time.time() > deadline:
                pytest.fail(f"{what}: not shown within {timeout_s:g} s")
            time.sleep(0.5)
        return value


@contextlib.contextmanager
def webdriver(profile: Path, width: int = 1280, height: int = 1024):
    """A headless Chromium window of ``width`` x ``height`` CSS pixels, driven by chromium-driver."""
    browser, driver = programs("chromium", "chromedriver")
    session = Session(free_port())
    proc = subprocess.Popen([driver, f"--port={session.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                session.call("GET", "/status")
                break
            except OSError:
                time.sleep(0.05)
        opened = session.call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": browser, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", f"--user-data-dir={profile}"]}}}})
        session.base = f"/session/{opened['sessionId']}"
        try:
            yield session
        finally:
            session.call("DELETE", "")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine: the session is closed, the driver only slow to exit
            proc.kill()
            proc.wait()

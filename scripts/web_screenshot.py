"""docs/web-ui.png: the web UI with the packaged default model, on a packaged sample abstract, with three
candidates, the verdict on the authors' own title and papers like it (from the paper index beside the
store: `chatgentitle index ../shared/data/arxiv-metadata-300k.jsonl.gz` first). Needs Chromium and
playwright (what `.ci/run` installs).

    python scripts/web_screenshot.py [docs/web-ui.png]
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

from chatgentitle.data.records import sample_papers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(out: Path) -> None:
    paper = sample_papers()[0]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "chatgentitle", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):  # loading the model and decoding one abstract before it listens
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("Generation options").click()
            count = page.locator("#option-num_candidates input[type=number]")
            slider = page.locator("#option-num_candidates input[type=range]")
            for _ in range(20):  # typed before the page's scripts took the box over: type again
                count.fill("3")
                count.press("Tab")
                if slider.input_value() == "3":
                    break
                page.wait_for_timeout(250)
            page.get_by_text("Generation options").click()
            page.locator("#abstract-input textarea").fill(paper["abstract"])
            page.locator("#your-title textarea, #your-title input").first.fill(paper["title"])
            page.locator("#generate").click()
            expect(page.locator("#verdict")).to_contain_text("Your title", timeout=120_000)
            expect(page.locator("#related")).to_contain_text("Papers like yours", timeout=30_000)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/web-ui.png"))

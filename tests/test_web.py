"""The Gradio UI in a real browser: headless Chromium types an abstract and reads the title."""

import shutil
import socket
from pathlib import Path

import pytest
from helpers import serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ABSTRACT = "we propose a novel method for learning graph neural networks"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(fake_generator):
    from chatgentitle.serving.app import create_app, with_ui
    from chatgentitle.titling.ranking import Ranker

    with serving(with_ui(create_app([fake_generator], Ranker()))) as url:
        yield url


def demo_config(source) -> dict:
    from chatgentitle.serving.app import create_app
    from chatgentitle.serving.web import build_demo

    return build_demo(create_app([source]).state.service).get_config_file()


def test_ui_has_the_seed_boxes(fake_generator):
    from chatgentitle.data.prompt import SEED_INSTRUCTION

    config = demo_config(fake_generator)
    labels = {c["props"].get("label"): c["props"].get("value") for c in config["components"]}
    assert labels["Instruction"] == SEED_INSTRUCTION
    assert "Input" in labels and "Title" in labels


def test_sliders_have_the_bounds_and_defaults_of_generation_options(fake_generator):
    from chatgentitle.config import bounds
    from chatgentitle.decoding.options import GenerationOptions
    from chatgentitle.serving.web import OPTION_FIELDS

    sliders = {c["props"]["label"]: c["props"] for c in demo_config(fake_generator)["components"]
               if c["type"] == "slider"}
    assert sliders["Words"]["maximum"] == bounds(GenerationOptions, "words")[1]  # 0 (any length) up to it
    for option in OPTION_FIELDS:
        if "range" in option.metadata:
            low, high = option.metadata["range"]
            assert (sliders[option.name]["minimum"], sliders[option.name]["maximum"]) == (low, high)
            assert sliders[option.name]["value"] == option.default
    assert sliders["num_beams"]["maximum"] == 8 and sliders["max_new_tokens"]["maximum"] == 64


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_browser_types_abstract_and_sees_title(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        page = browser.new_page()
        page.goto(server, wait_until="domcontentloaded")
        page.locator("#abstract-input textarea").fill(ABSTRACT)
        page.locator("#generate").click()
        title = page.locator("#title-output textarea")
        sync_api.expect(title).to_have_value("We Propose A Candidate 0", timeout=30_000)
        assert page.locator("table").filter(has_text="Candidate 0").count()  # the ranked candidates table
        browser.close()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_candidates_table_is_readable(server, tmp_path):
    """Three ranked candidates, one row each, the title column the widest and nothing cut off; the page
    is kept as a screenshot (CHATGENTITLE_SCREENSHOT=path keeps it elsewhere, e.g. for the docs)."""
    import os

    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server, wait_until="domcontentloaded")
        page.get_by_text("Generation options").click()
        count = page.locator("#option-num_candidates input[type=number]")
        slider = page.locator("#option-num_candidates input[type=range]")
        for _ in range(20):  # a value typed before the page's scripts have taken the box over is lost: type again
            count.fill("3")
            count.press("Tab")  # the slider takes the typed value on blur
            if slider.input_value() == "3":
                break
            page.wait_for_timeout(250)
        sync_api.expect(slider).to_have_value("3")
        page.locator("#abstract-input textarea").fill(ABSTRACT)
        page.locator("#generate").click()
        table = page.locator("#candidates")
        body = table.locator(".virtual-row")  # Gradio draws the rows as a virtual list of grid rows
        sync_api.expect(body).to_have_count(3, timeout=30_000)
        sync_api.expect(body.first).to_contain_text("Candidate 0")
        widths = table.locator("thead th.header-cell").evaluate_all(
            "cells => cells.map(c => c.getBoundingClientRect().width)")
        title_width = table.locator('thead th[title="title"]').evaluate("c => c.getBoundingClientRect().width")
        assert len(widths) == 6 and title_width == max(widths) and title_width > 0.4 * sum(widths)
        overflow = table.locator(".virtual-table-viewport").evaluate("v => v.scrollWidth - v.clientWidth")
        assert overflow <= 1, "the table scrolls sideways"
        page.get_by_text("Generation options").click()  # folded again: the page as a user sees it
        shot = Path(os.environ.get("CHATGENTITLE_SCREENSHOT") or tmp_path / "web-ui.png")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        browser.close()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_browser_judges_your_title(server):
    """The "Your title" box: the verdict says where the author's title ranks and what the model prefers."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(server, wait_until="domcontentloaded")
        page.locator("#abstract-input textarea").fill(ABSTRACT)
        page.locator("#your-title textarea, #your-title input").first.fill("Graph Networks Learned From Many Words")
        page.locator("#generate").click()
        verdict = page.locator("#verdict")
        # the fake model finds shorter titles likelier: its four 5-word titles beat the author's 6 words
        sync_api.expect(verdict).to_contain_text("5 of 5 among the 4 titles", timeout=30_000)
        sync_api.expect(verdict).to_contain_text("We Propose A Candidate 0")
        browser.close()

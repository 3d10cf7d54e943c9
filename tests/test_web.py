"""The Gradio UI in a real browser: headless Chromium types an abstract and reads the title."""

import shutil
import socket

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
    from chatgentitle.ranking import Ranker
    from chatgentitle.server import create_app, with_ui

    with serving(with_ui(create_app([fake_generator], Ranker()))) as url:
        yield url


def demo_config(source) -> dict:
    from chatgentitle.server import create_app
    from chatgentitle.web import build_demo

    return build_demo(create_app([source]).state.service).get_config_file()


def test_ui_has_the_seed_boxes(fake_generator):
    from chatgentitle.prompt import SEED_INSTRUCTION

    config = demo_config(fake_generator)
    labels = {c["props"].get("label"): c["props"].get("value") for c in config["components"]}
    assert labels["Instruction"] == SEED_INSTRUCTION
    assert "Input" in labels and "Title" in labels


def test_sliders_have_the_bounds_and_defaults_of_generation_options(fake_generator):
    import dataclasses

    from chatgentitle.generate import GenerationOptions

    sliders = {c["props"]["label"]: c["props"] for c in demo_config(fake_generator)["components"]
               if c["type"] == "slider"}
    for option in dataclasses.fields(GenerationOptions):
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

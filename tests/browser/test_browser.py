"""The page in a real browser: Debian Chromium driven by Playwright, headless, against the app on 127.0.0.1.

Also a script: `python -m tests.browser.test_browser URL OUT.png` takes the README screenshot of a running app with the
steps a newcomer takes and the tests check: click the first example, wait for the result and the step view.
"""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, move_step

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Chromium is not installed at {CHROMIUM}"),
]


def open_page(playwright, url: str):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("gradio-app")
    page.wait_for_selector("#compare-button")
    return browser, page


def status(page) -> str:
    return page.inner_text("#status")


def compare(page, prompt: str, negative: str) -> None:
    """Type both prompts, press Compare and wait until the run is done and the step view is drawn."""
    page.get_by_label("prompt", exact=True).fill(prompt)
    page.get_by_label("negative prompt", exact=True).fill(negative)
    page.click("#compare-button")
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done in')")
    page.wait_for_selector("#image-without img")
    page.wait_for_selector("#image-with img")
    page.wait_for_selector("#x0-with img")
    # Gradio's images load lazily: one far below the viewport (the curves, under the article row and the results)
    # has no size, so Playwright calls it hidden, until it is scrolled near
    page.locator("#curves img").scroll_into_view_if_needed()
    page.wait_for_selector("#curves img")


def shown_image(page, selector: str) -> Image.Image:
    """The image file the browser shows in `selector`, as served (format and true size included)."""
    source = page.get_attribute(f"{selector} img", "src")
    response = page.request.get(source)
    assert response.ok, f"{selector}: {source} answered {response.status}"
    image = Image.open(io.BytesIO(response.body()))
    image.load()
    return image


def test_compare_and_scrub_the_steps(app_server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, _ = app_server
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, url)
        try:
            compare(page, "a red hat", "blue")
            without, with_negative = shown_image(page, "#image-without"), shown_image(page, "#image-with")
            for image in (without, with_negative):
                assert image.format == "PNG" and image.size == (32, 32)
                assert np.ptp(np.asarray(image.convert("RGB"))) > 0, "a result image is one flat colour"
            assert not np.array_equal(np.asarray(without), np.asarray(with_negative))
            shown_width = page.eval_on_selector("#image-with img", "img => img.getBoundingClientRect().width")
            assert shown_width >= 256, f"the 32 px result is shown {shown_width} px wide, a thumbnail"
            assert "negative: blue" in page.inner_text("#caption-with")

            last_step = shown_image(page, "#x0-with")
            assert np.ptp(np.asarray(last_step.convert("RGB"))) > 0
            move_step(page)
            page.wait_for_function(
                "src => document.querySelector('#x0-with img').src !== src",
                arg=page.get_attribute("#x0-with img", "src"),
            )
            first_step = shown_image(page, "#x0-with")
            assert not np.array_equal(np.asarray(first_step), np.asarray(last_step))
            assert "step" in page.inner_text("#reading")

            screenshot = tmp_path / "page.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert np.ptp(np.asarray(Image.open(screenshot).convert("L"))) > 0
        finally:
            browser.close()


def run_many_seeds(page, count: int | None = None) -> None:
    """Press "Run many seeds" (after setting the number of seeds) and wait until the rates are read."""
    if count is not None:
        page.fill("#seed_count input[type=number]", str(count))
        page.press("#seed_count input[type=number]", "Enter")
    page.click("#seeds-button")
    page.wait_for_function("document.querySelector('#seeds-status').innerText.includes('columns in')")


def gallery_images(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{selector} img", "images => images.map(image => image.src)")


def test_branch_predictions_and_the_many_seeds_grids(app_server):
    """The article's argument on the page: what each branch predicts at a step, then three grids over seeds, their
    rate line, and a click that counts an image."""
    from playwright.sync_api import sync_playwright

    url, _ = app_server
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, url)
        try:
            compare(page, "a red hat", "blue")
            branches = ("#branch-prompt", "#branch-empty", "#branch-negative", "#branch-guided")
            last = [np.asarray(shown_image(page, selector).convert("RGB")) for selector in branches]
            assert all(np.ptp(image) > 0 for image in last)
            assert "guided step" in page.inner_text("#branch-note")
            move_step(page)  # another step: there the branches' predictions differ
            page.wait_for_function(
                "src => document.querySelector('#branch-empty img').src !== src",
                arg=page.get_attribute("#branch-empty img", "src"),
            )
            first = [np.asarray(shown_image(page, selector).convert("RGB")) for selector in branches]
            differ = not np.array_equal(first[0], first[1]) or not np.array_equal(last[0], last[1])
            assert differ, "the prompt's and the empty prompt's predictions"
            assert not np.array_equal(first[1], last[1])

            run_many_seeds(page, 4)
            for grid in ("#grid-without", "#grid-phrased", "#grid-with"):
                assert len(gallery_images(page, grid)) == 4, grid
            line = page.inner_text("#seeds-status")
            assert 'negative "blue" 0/4' in line and "without blue" in line
            page.locator("#grid-with img").nth(1).click()
            page.wait_for_function("document.querySelector('#seeds-status').innerText.includes('1/4')")
        finally:
            browser.close()


def click_first_example(page) -> None:
    page.click("text=Portrait photo of a man. | negative: mustache")
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done in')")
    page.wait_for_selector("#x0-with img")
    # Gradio's images load lazily: one far below the viewport (the curves, under the article row and the results)
    # has no size, so Playwright calls it hidden, until it is scrolled near
    page.locator("#curves img").scroll_into_view_if_needed()
    page.wait_for_selector("#curves img")


def test_first_example_shows_two_different_images_and_the_step_view(app_server):
    from playwright.sync_api import sync_playwright

    url, _ = app_server
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, url)
        try:
            click_first_example(page)
            assert page.get_by_label("negative prompt", exact=True).input_value() == "mustache"
            assert "negative: mustache" in page.inner_text("#caption-with")
            without, with_negative = shown_image(page, "#image-without"), shown_image(page, "#image-with")
            assert not np.array_equal(np.asarray(without), np.asarray(with_negative))
            for selector in ("#x0-without", "#guidance-without", "#x0-with", "#guidance-with", "#push"):
                assert np.ptp(np.asarray(shown_image(page, selector).convert("RGB"))) > 0, selector
            page.wait_for_selector("#curves img")
            assert "step" in page.inner_text("#reading")
            # the first example records attention maps: chips of both prompts' words, the chosen word's map
            page.wait_for_selector("#attention img")
            assert "− mustache" in page.inner_text("#attention-word") and "+ man" in page.inner_text("#attention-word")
            assert "mustache" in page.inner_text("#attention-reading")
            before = page.get_attribute("#attention img", "src")
            page.locator("#attention-word label", has_text="+ man").click()
            page.wait_for_function("src => document.querySelector('#attention img').src !== src", arg=before)
            assert "man (prompt" in page.inner_text("#attention-reading")
            assert shown_image(page, "#attention-strip").width > shown_image(page, "#attention").width
        finally:
            browser.close()


class RunSpy:
    """Wraps the app's device call (the server runs in this process): the steps each run sampled and how it
    ended, so Stop is checked on the server's state, not after a pause."""

    def __init__(self):
        from negprompt_demo.runner import requests

        self.real, self.steps, self.outcome, self.ended = requests.run_paired, [], None, threading.Event()

    def __call__(self, pipe, prepared, *, on_step, stop, **options):
        from negprompt_demo.sampling.engine import GenerationCancelled

        def step(done, total, record):
            self.steps.append(done)
            on_step(done, total, record)

        try:
            result = self.real(pipe, prepared, on_step=step, stop=stop, **options)
            self.outcome = "done"
            return result
        except GenerationCancelled:
            self.outcome = "cancelled"
            raise
        finally:
            self.ended.set()


def test_stop_ends_the_run_and_the_page_stays_usable(app_server, monkeypatch):
    from playwright.sync_api import sync_playwright

    from negprompt_demo.runner import requests

    url, _ = app_server
    spy = RunSpy()
    monkeypatch.setattr(requests, "run_paired", spy)
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, url)
        try:
            page.click("text=sampling settings")
            page.fill("#steps input[type=number]", "150")
            page.press("#steps input[type=number]", "Enter")
            page.get_by_label("prompt", exact=True).fill("a red hat")
            page.click("#compare-button")
            page.wait_for_function("document.querySelector('#status').innerText.includes('Sampling')")
            page.wait_for_selector("#x0-with img")  # at least one step streamed
            page.click("#stop-button")
            page.wait_for_function("document.querySelector('#status').innerText.includes('Stopped')")
            # The status changes at the click; the server's cancel lands a moment later (a step or a few under
            # load): the run then ends cancelled, before its last step, and the page shows no step it did not sample.
            assert spy.ended.wait(timeout=TIMEOUT_MS / 1000), "sampling did not stop"
            assert spy.outcome == "cancelled" and spy.steps[-1] < 150, "sampling went on after Stop"
            assert 1 <= int(page.input_value("#step input[type=number]")) <= spy.steps[-1]
            assert "Stopped" in status(page)

            page.fill("#steps input[type=number]", "2")
            page.press("#steps input[type=number]", "Enter")
            compare(page, "a red hat", "blue")
            # the new run's step view (it opens where the runs part, not at the last step)
            page.wait_for_function("document.querySelector('#step input[type=range]').max === '2'")
            assert "2 steps" in status(page).replace("`", "")
        finally:
            browser.close()


def test_a_link_fills_the_inputs_runs_and_gives_its_own_link(app_server):
    from playwright.sync_api import sync_playwright

    url, _ = app_server
    query = "?prompt=a+red+hat&negative=blue+%26+%3Cb%3Egreen%3C%2Fb%3E&seed=5&steps=3&perp_neg=true"
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, url + query)
        try:
            page.context.grant_permissions(["clipboard-read", "clipboard-write"])
            page.wait_for_function("document.querySelector('#status').innerText.includes('Done in')")
            assert page.get_by_label("prompt", exact=True).input_value() == "a red hat"
            assert page.get_by_label("negative prompt", exact=True).input_value() == "blue & <b>green</b>"
            assert page.input_value("#seed input") == "5" and "seed 5 · 3 steps" in status(page)
            assert "negative: blue & <b>green</b>" in page.inner_text("#caption-with")  # text, not markup
            without, with_negative = shown_image(page, "#image-without"), shown_image(page, "#image-with")
            assert not np.array_equal(np.asarray(without), np.asarray(with_negative))

            page.wait_for_function("document.querySelector('#link textarea').value.includes('seed=5')")
            link = page.input_value("#link textarea")
            assert link.startswith(url + "?prompt=a+red+hat&negative=blue+%26+%3Cb%3Egreen%3C%2Fb%3E&seed=5&steps=3&")
            assert "perp_neg=true" in link
            page.click("#copy-link")
            page.wait_for_function("document.querySelector('#link-note').innerText.includes('copied')")
            assert page.evaluate("navigator.clipboard.readText()") == link
            page.evaluate("() => { navigator.clipboard.writeText = async () => { throw new Error('blocked'); }; }")
            page.click("#copy-link")
            page.wait_for_function("document.querySelector('#link-note').innerText.includes('select the link')")
            assert not page.eval_on_selector("#link textarea", "e => e.disabled")  # selectable, to copy by hand

            page.goto(url + "?prompt=a+cat&steps=999&scheduler=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
            page.wait_for_selector("#status")
            page.wait_for_function("document.querySelector('#status').innerText.includes('Could not open')")
            assert "steps must be between 1 and 150, got 999." in status(page)
            assert page.get_by_label("prompt", exact=True).input_value() == ""  # nothing filled, nothing run
            compare(page, "a red hat", "blue")  # the page works as usual
        finally:
            browser.close()


def test_a_link_to_an_example_shows_its_cached_result(app_server):
    from playwright.sync_api import sync_playwright

    url, _ = app_server
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, url)
        try:
            click_first_example(page)
            page.wait_for_function("document.querySelector('#link textarea').value.includes('seed=3')")
            link, shown = page.input_value("#link textarea"), page.get_attribute("#image-with img", "src")
            page.goto(link)
            page.wait_for_selector("#status")
            page.wait_for_function("document.querySelector('#status').innerText.includes('Done in')")
            assert page.input_value("#link-example textarea") == "0"  # served from Gradio's example cache
            assert page.get_attribute("#image-with img", "src") == shown  # the cached file itself
            assert page.get_by_label("negative prompt", exact=True).input_value() == "mustache"
            page.wait_for_function("document.querySelector('#link textarea').value.includes('seed=3')")
            assert page.input_value("#link textarea") == link
        finally:
            browser.close()


if __name__ == "__main__":
    from playwright.sync_api import sync_playwright

    target_url, out = sys.argv[1], sys.argv[2]
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, target_url)
        click_first_example(page)
        run_many_seeds(page)
        page.screenshot(path=out, full_page=True)
        browser.close()

"""The page a newcomer walks, in a real browser (Debian Chromium via Playwright), on a server in its own process.

A fresh app with an empty example cache: the first screen at 1440×900 (the article's three-way contrast, checked by
the elements' boxes), every example clicked, then the app restarted on the same cache folder and every example
clicked again; an own comparison, the step slider, attention maps and a word chip, many seeds and a mark, the
sweep, copy and open the link, every download; each input's minimum and maximum and one value out of range; and
the first screen at 390×844. Over the whole journey: no visible "Error" badge and no traceback in the server's log.
Screenshots of every step go to $JOURNEY_SHOTS (default: the test's temporary folder).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from negprompt_demo.page.examples import EXAMPLES_FILE
from negprompt_demo.settings import FIELDS, MAX_SEED
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, move_step
from tests.support.live_server import free_port
from tests.support.paths import ROOT
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Chromium is not installed at {CHROMIUM}"),
]
# True once the page has scrolled and its position is the same as at the previous poll (a smooth scroll has ended).
SCROLL_SETTLED = """() => {
  const y = window.scrollY, last = window.lastPolledScrollY;
  window.lastPolledScrollY = y;
  return y > 0 && y === last;
}"""
SERVE = """
import sys
from negprompt_demo.page.app import build_app, launch_options
from negprompt_demo.page.app_config import AppConfig
model, port = sys.argv[1], int(sys.argv[2])
demo = build_app(AppConfig(default_model=model, models=[model]), warm_first_example=True)
demo.launch(server_name="127.0.0.1", server_port=port, quiet=True, **launch_options())
"""


@contextlib.contextmanager
def server(model: Path, cache: Path, log: Path):
    """The app as `python demo.py` runs it, in its own process (a restart is a new process), its output in `log`."""
    port = free_port()
    env = {**os.environ, "GRADIO_EXAMPLES_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    with open(log, "a", encoding="utf-8") as out:
        process = subprocess.Popen([sys.executable, "-c", SERVE, str(model), str(port)], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:

        def answers() -> bool:
            assert process.poll() is None, log.read_text(encoding="utf-8")[-3000:]
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=2)  # noqa: S310 (a local test server)
                return True
            return False

        wait_until(answers, "the app to start", timeout=180, every=0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


class Journey:
    def __init__(self, page, shots: Path):
        self.page, self.shots, self.count = page, shots, 0

    def shot(self, name: str, full_page: bool = False) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.shots / f"{self.count:02d}-{name}.png"), full_page=full_page)

    def status(self) -> str:
        """The status line's own text (its Markdown), without Gradio's progress tracker laid over it."""
        return self.page.inner_text("#status [data-testid='markdown']")

    def wait_done(self, previous: str = "") -> None:
        """Wait until the status line is a finished run's ("Done in …", not `previous`) and its event is over
        (Gradio's tracker hidden again): while an event is still processing, the last run's "Done" line is still
        there under the tracker, and an example still loading would overwrite inputs typed meanwhile."""
        self.page.wait_for_function(
            "previous => { const status = document.querySelector('#status');"
            " const text = status.querySelector('[data-testid=markdown]').innerText;"
            " const tracker = status.querySelector('[data-testid=status-tracker]');"
            " const idle = !tracker || tracker.classList.contains('hide');"
            " return idle && text.includes('Done in') && text !== previous; }",
            arg=previous,
        )

    def no_error_badges(self, where: str) -> None:
        badges = self.page.locator(".error:visible, [data-testid='status-tracker'] .error:visible")
        texts = self.page.get_by_text("Error", exact=True)
        visible = [texts.nth(i) for i in range(texts.count()) if texts.nth(i).is_visible()]
        assert badges.count() == 0 and not visible, f"an Error badge is shown: {where}"

    def box(self, selector: str) -> dict:
        box = self.page.locator(selector).first.bounding_box()
        assert box is not None, f"{selector} is not laid out"
        return box

    def set_number(self, name: str, value) -> None:
        box = self.page.locator(f"#{name} input").first
        box.fill(str(value))
        box.press("Tab")  # leave the box: its value is committed


def example_labels() -> list[str]:
    import json

    return [entry["label"] for entry in json.loads(EXAMPLES_FILE.read_text(encoding="utf-8"))["examples"]]


def click_every_example(journey: Journey, tag: str) -> None:
    page = journey.page
    for number, label in enumerate(example_labels(), start=1):
        before = journey.status()
        page.get_by_text(label, exact=True).first.click()
        journey.wait_done(before)
        page.wait_for_selector("#image-with img")
        journey.no_error_badges(f"example {number} ({tag})")
        journey.shot(f"{tag}-example-{number}")


def first_screen_contrast(journey: Journey) -> None:
    """The three-way contrast lies side by side within the 1440×900 viewport, with its reading, unscrolled."""
    page = journey.page
    assert page.evaluate("window.scrollY") == 0
    boxes = [journey.box(f"#article-{column} img") for column in ("without", "phrased", "with")]
    reading = journey.box("#article-reading")
    for box in [*boxes, reading]:
        assert box["y"] >= 0 and box["y"] + box["height"] <= 900, f"below the first screen: {box}"
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"], "the three images are not side by side in order"
    assert max(abs(box["y"] - boxes[0]["y"]) for box in boxes) < 5
    assert all(box["width"] >= 100 for box in boxes), "an image is a thumbnail"
    text = page.inner_text("#article")
    assert "no negative prompt" in text and "without mustache" in text and 'negative prompt "mustache"' in text


def own_comparison(journey: Journey) -> None:
    page = journey.page
    page.get_by_label("prompt", exact=True).fill("a red hat")
    page.get_by_label("negative prompt", exact=True).fill("blue")
    before = journey.status()
    page.click("#compare-button")
    journey.wait_done(before)
    assert page.input_value("#seed-used input, #seed-used textarea") != ""
    source = page.get_attribute("#x0-with img", "src")
    step = move_step(page)
    page.wait_for_function("src => document.querySelector('#x0-with img').src !== src", arg=source)
    page.wait_for_function("step => document.querySelector('#branch-note').innerText.includes(`Step ${step},`)",
                           arg=step)  # fmt: skip
    journey.shot("own-comparison")


def inputs_at_their_bounds(journey: Journey) -> None:
    """Every numeric input at its minimum in one run and at its maximum in another (both run), then one value out
    of range: the server's message, the "Done" line gone, nothing clamped."""
    page = journey.page
    numbers = [name for name, field in FIELDS.items() if field.kind in ("int", "float")]
    sizes = {"width": (16, 64), "height": (16, 64)}  # the tiny model's (native 32 px)
    lowest = {name: sizes.get(name, (FIELDS[name].minimum, None))[0] for name in numbers}
    highest = {name: sizes.get(name, (None, FIELDS[name].maximum))[1] for name in numbers}
    lowest["seed"], highest["seed"] = 0, MAX_SEED
    highest["steps"] = FIELDS["steps"].maximum
    for tag, values in (("minimum", lowest), ("maximum", highest)):
        if tag == "maximum":
            values = {**values, "negative_start": 1.0}  # the start may not come after the end (end's maximum: 1)
        for name, value in values.items():
            journey.set_number(name, f"{value:g}" if isinstance(value, float) else value)
        before = journey.status()
        page.click("#compare-button")
        journey.wait_done(before)
        shown = journey.status()  # the run says it used the typed values, none clamped
        assert "Could not" not in shown and f"seed {values['seed']} · {values['steps']} steps" in shown.replace("`", "")
        assert f"{values['width']}×{values['height']} px" in shown
        journey.no_error_badges(f"every input at its {tag}")
        journey.shot(f"inputs-{tag}")
    journey.set_number("steps", 0)
    page.click("#compare-button")
    page.wait_for_function("document.querySelector('#status').innerText.includes('Could not compare')")
    assert "steps must be between 1 and 150, got 0." in journey.status() and "Done in" not in journey.status()
    assert page.input_value("#steps input") == "0", "the typed value was changed"
    journey.set_number("steps", 1.5)
    page.click("#compare-button")
    page.wait_for_function("document.querySelector('#status').innerText.includes('whole number')")
    journey.shot("input-out-of-range")
    journey.set_number("steps", 4)
    for name in ("width", "height"):
        journey.set_number(name, 32)
    for name, value in (("seed", 3), ("guidance", 7.5), ("negative_start", 0), ("negative_end", 1)):
        journey.set_number(name, value)
    journey.set_number("negative_strength", 1)


def the_rest_of_the_page(journey: Journey) -> None:
    page = journey.page
    # attention maps and a word chip
    page.get_by_label("record attention maps", exact=False).check()
    before = journey.status()
    page.click("#compare-button")
    journey.wait_done(before)
    page.wait_for_selector("#attention img")
    source = page.get_attribute("#attention img", "src")
    page.locator("#attention-word label").nth(1).click()
    page.wait_for_function("src => document.querySelector('#attention img').src !== src", arg=source)
    journey.shot("attention")
    # many seeds and a mark
    journey.set_number("seed_count", FIELDS_SEEDS_MIN)
    page.click("#seeds-button")
    page.wait_for_function("document.querySelector('#seeds-status').innerText.includes('columns in')")
    line = page.inner_text("#seeds-status")
    page.locator("#grid-without img").nth(0).click()
    page.wait_for_function("line => document.querySelector('#seeds-status').innerText !== line", arg=line)
    journey.no_error_badges("many seeds")
    journey.shot("many-seeds")
    # the sweep says what it shows
    page.click("#sweep-button")
    page.wait_for_selector("#sweep img")
    page.wait_for_function("document.querySelector('#sweep-reading').innerText.includes('seed')")
    assert "a red hat" in page.inner_text("#sweep-reading")
    journey.shot("sweep")
    # every download answers
    page.get_by_role("tab", name="downloads").click()
    page.wait_for_selector("#downloads a")
    links = page.eval_on_selector_all("#downloads a", "links => links.map(link => link.href)")
    assert len(links) >= 4
    for link in links:
        assert page.request.get(link).ok, link
    # copy the link and open it
    page.click("#copy-link")
    page.wait_for_function("document.querySelector('#link-note').innerText.length > 0")
    link = page.input_value("#link textarea")
    assert link.startswith("http")
    page.goto(link)
    page.wait_for_selector("#status")
    journey.wait_done()  # the link's own run
    journey.no_error_badges("the opened link")
    journey.shot("opened-link")


def nag_at_guidance_one(journey: Journey) -> None:
    """Guidance 1: CFG has no negative branch; one click lets the negative act in attention, and the step view
    draws where NAG moved the attention output."""
    from playwright.sync_api import expect

    page = journey.page
    page.click("#use-nag")
    expect(page.get_by_label(FIELDS["negative_mode"].label, exact=True)).to_have_value("nag")
    page.click("text=sampling settings")
    page.wait_for_selector("#guidance input")
    journey.set_number("guidance", 1)
    before = journey.status()
    page.click("#compare-button")
    journey.wait_done(before)
    assert "guidance 1 " in journey.status().replace("`", "") + " "
    page.locator("#nag img").scroll_into_view_if_needed()
    page.wait_for_selector("#nag img")
    assert "acts in attention" in page.inner_text("#branch-note") or "NAG" in page.inner_text("#branch-note")
    journey.no_error_badges("NAG at guidance 1")
    journey.shot("nag-at-guidance-1")


FIELDS_SEEDS_MIN = 4


def test_the_journey_of_a_newcomer(tiny_sd_folder, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("JOURNEY_SHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    cache, log = tmp_path / "cache", tmp_path / "server.log"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            with server(tiny_sd_folder, cache, log) as url:
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                context.grant_permissions(["clipboard-read", "clipboard-write"])
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                journey = Journey(page, shots)
                page.goto(url)
                page.wait_for_selector("#compare-button")
                assert page.input_value("#seed-used input, #seed-used textarea") == ""
                seed = page.input_value("#seed input")
                page.reload()
                page.wait_for_selector("#compare-button")
                assert page.input_value("#seed input") == seed, "the default seed is not stable"
                journey.shot("first-screen")
                click_every_example(journey, "fresh")
                before = journey.status()
                page.get_by_text(example_labels()[0], exact=True).first.click()
                journey.wait_done(before)
                page.wait_for_function("document.querySelector('#caption-with').innerText.includes('mustache')")
                page.evaluate("window.scrollTo(0, 0)")
                first_screen_contrast(journey)
                journey.shot("first-screen-after-example-1")
                context.close()
            with server(tiny_sd_folder, cache, log) as url:  # a restart on the same cache folder
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                context.grant_permissions(["clipboard-read", "clipboard-write"])
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                journey.page = page
                page.goto(url)
                page.wait_for_selector("#compare-button")
                click_every_example(journey, "restarted")
                own_comparison(journey)
                page.click("text=sampling settings")
                page.wait_for_selector("#negative_strength input")  # the accordion's boxes are mounted
                inputs_at_their_bounds(journey)
                the_rest_of_the_page(journey)
                nag_at_guidance_one(journey)
                context.close()

                phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
                page = phone.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                journey.page = page
                page.goto(url)
                page.wait_for_selector("#compare-button")
                journey.shot("phone-first-screen")
                page.get_by_text(example_labels()[0], exact=True).first.click()
                journey.wait_done()
                page.wait_for_function(SCROLL_SETTLED, polling=100)  # the smooth scroll to the result has ended
                box = journey.box("#image-with img")
                assert box["y"] < 844 and box["y"] + box["height"] > 0, "the tapped example's result is not shown"
                journey.shot("phone-after-example")
                phone.close()
        finally:
            browser.close()
    server_log = log.read_text(encoding="utf-8")
    assert "Traceback" not in server_log, server_log[server_log.index("Traceback") - 500 :][:4000]

# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The replay report in a real browser: Debian's headless Chromium, driven through its
chromedriver (Chrome DevTools underneath) with selenium.

The demo's report of the real sample bag opens without a console error, its canvases draw
(pixels read back from the page), the 3D view turns under a mouse drag, cards render when
scrolled to, the depth and the raw model output open on demand, and the timeline jumps to a
frame. A screenshot is kept in test-artifacts/ (ignored by git).

Chromium missing: the test fails in CI (CI=true, or SPATIAL_VLM_REQUIRE_BROWSER=1) and is
skipped with the reason elsewhere. `.ci/run` installs chromium and chromium-driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
import json
import os
from pathlib import Path
import shutil
import tempfile
import time
from typing import Any

import numpy as np
import pytest

from spatial_vlm_ros.core.types import Lifted3D, PixelBox, Scene, SpatialObject
from spatial_vlm_ros.engines.recorded import RecordedEngine
from spatial_vlm_ros.pipeline import PipelineConfig, SpatialPipeline
from spatial_vlm_ros.replay.report import ReportBuilder, ReportMeta
from spatial_vlm_ros.replay.runner import ReplayOptions, replay_bag

from conftest import REPO_ROOT

SAMPLE_BAG = REPO_ROOT / 'data' / 'sample_bag'
ARTIFACTS = Path(os.environ.get('SPATIAL_VLM_TEST_ARTIFACTS', REPO_ROOT / 'test-artifacts'))
BROWSER_REQUIRED = (
    os.environ.get('CI', '').lower() == 'true'
    or os.environ.get('SPATIAL_VLM_REQUIRE_BROWSER') == '1'
)
# The flags that work on these machines (no GPU, no sandbox, nothing fetched from the network).
CHROMIUM_FLAGS = (
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--window-size=1280,900',
)
# Pixels of a canvas that differ from its corner (background) pixel, and a digest of them.
INK_JS = """
const canvas = arguments[0];
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let inked = 0, digest = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) inked++;
  digest = (digest * 31 + data[i] + 7 * data[i + 1] + 13 * data[i + 2]) % 1000000007;
}
return [inked, data.length / 4, digest];
"""


def _missing_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return 'the selenium package is not installed (requirements/dev.txt)'
    if not _chromium() or not _chromedriver():
        return (
            'chromium or chromedriver is not installed (apt-get install chromium chromium-driver)'
        )
    return None


def _chromium() -> str | None:
    return os.environ.get('SPATIAL_VLM_CHROMIUM') or shutil.which('chromium')


def _chromedriver() -> str | None:
    return os.environ.get('SPATIAL_VLM_CHROMEDRIVER') or shutil.which('chromedriver')


@pytest.fixture(scope='module')
def browser() -> Iterator[Any]:
    missing = _missing_browser()
    if missing:
        if BROWSER_REQUIRED:
            pytest.fail(f'the browser test must run here but {missing}', pytrace=False)
        pytest.skip(f'{missing}; CI=true or SPATIAL_VLM_REQUIRE_BROWSER=1 makes this a failure')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager must never try to download a browser or a driver.
    os.environ['SE_OFFLINE'] = 'true'
    options = webdriver.ChromeOptions()
    options.binary_location = str(_chromium())
    profile = tempfile.mkdtemp(prefix='spatial-vlm-chromium-')
    for flag in (*CHROMIUM_FLAGS, f'--user-data-dir={profile}'):
        options.add_argument(flag)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(service=Service(str(_chromedriver())), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope='module')
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, str]]:
    """The report `make demo` writes: the real sample bag through the recorded engine."""
    recording = SAMPLE_BAG / 'recorded.jsonl'
    out = tmp_path_factory.mktemp('demo')
    pipeline = SpatialPipeline(RecordedEngine(path=recording), '', PipelineConfig())
    asyncio.run(
        replay_bag(ReplayOptions(SAMPLE_BAG, out, progress=False, write_bag=False), pipeline)
    )
    texts = {}
    for line in recording.read_text(encoding='utf-8').splitlines():
        record = json.loads(line)
        texts[int(record['stamp_ns'])] = record['text']
    return out / 'report.html', texts


def _open(browser: Any, path: Path) -> None:
    browser.get(path.resolve().as_uri())
    _wait(browser, "return document.body.dataset.ready === 'true'", 'the page never got ready')


def _wait(browser: Any, script: str, message: str, *args: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = browser.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f'{message} (after {timeout_s} s); console: {_console(browser)}')


def _console(browser: Any) -> list[dict[str, Any]]:
    return browser.get_log('browser')


def _ink(browser: Any, canvas: Any) -> tuple[int, int, int]:
    inked, total, digest = browser.execute_script(INK_JS, canvas)
    return int(inked), int(total), int(digest)


def _card(browser: Any, index: int) -> Any:
    return browser.find_element('css selector', f'section.card[data-card="{index}"]')


CARD_RENDERED_JS = (
    "const card = document.querySelector('section.card[data-card=\"' + arguments[0] + '\"]');"
    'return card.dataset.rendered || null;'
)


def _rendered(browser: Any, index: int) -> str | None:
    return browser.execute_script(CARD_RENDERED_JS, index)


def test_demo_report_renders_draws_and_responds_in_chromium(browser: Any, demo_report) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    path, texts = demo_report
    _console(browser)  # start from an empty log
    _open(browser, path)
    _wait(browser, CARD_RENDERED_JS, 'the first card was not drawn', 0)
    assert _rendered(browser, 0) == 'true'
    cards = browser.find_elements('css selector', 'section.card')
    # 16 frames, 4 real images each repeated 4 times: 4 cards.
    assert len(cards) == 4
    # Lazy: the last card is drawn only once it comes near the viewport.
    assert _rendered(browser, 3) is None

    timeline = browser.find_element('id', 'timeline-canvas')
    inked, total, _ = _ink(browser, timeline)
    assert inked > 0.02 * total, f'timeline nearly blank: {inked} of {total} pixels'
    first = _card(browser, 0)
    for selector in ('canvas.map', 'canvas.v3d'):
        inked, total, _ = _ink(browser, first.find_element('css selector', selector))
        assert inked > 0.05 * total, f'{selector} nearly blank: {inked} of {total} pixels'
    image = first.find_element('css selector', 'figure.image img')
    assert browser.execute_script('return arguments[0].naturalWidth', image) == 480

    # The 3D view orbits under a mouse drag.
    view = first.find_element('css selector', 'canvas.v3d')
    browser.execute_script('arguments[0].scrollIntoView({block: "center"})', view)
    _, _, before = _ink(browser, view)
    ActionChains(browser).move_to_element(view).click_and_hold().move_by_offset(
        80, 30
    ).release().perform()
    inked, total, after = _ink(browser, view)
    assert after != before and inked > 0.05 * total, 'the 3D view did not change on a drag'

    # Depth and the raw model output open on demand.
    details = first.find_elements('css selector', 'details')
    summaries = [d.find_element('css selector', 'summary').text for d in details]
    depth = details[summaries.index('depth (colour-mapped, with the boxes)')]
    depth.find_element('css selector', 'summary').click()
    canvas = _wait(browser, 'return arguments[0].querySelector("canvas.depth")', 'no depth', depth)
    inked, total, _ = _ink(browser, canvas)
    assert inked > 0.5 * total, f'depth view nearly blank: {inked} of {total} pixels'
    raw = next(d for d, s in zip(details, summaries, strict=True) if s.startswith('model output'))
    raw.find_element('css selector', 'summary').click()
    run = json.loads(browser.find_element('id', 'report-data').get_attribute('textContent'))
    stamp = int(run['frames'][0]['stamp'])
    shown = raw.find_element('css selector', 'pre').get_attribute('textContent')
    assert shown == texts[stamp]

    # A click on the timeline jumps to that frame's card, which then draws.
    browser.execute_script('window.scrollTo(0, 0)')
    width = browser.execute_script('return arguments[0].getBoundingClientRect().width', timeline)
    # Offsets count from the centre: 10 % right of it is frame 9 or 10 of 16, in the third card.
    ActionChains(browser).move_to_element_with_offset(
        timeline, int(width / 10), 0
    ).click().perform()
    _wait(browser, 'return window.scrollY > 500', 'the timeline click did not scroll')
    _wait(browser, CARD_RENDERED_JS, 'card 2 not drawn', 2)

    # Every card draws when scrolled to.
    browser.execute_script('window.scrollTo(0, document.body.scrollHeight)')
    _wait(browser, CARD_RENDERED_JS, 'the last card was not drawn', 3)
    # Nothing was fetched from outside the file.
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert not [url for url in urls if url.startswith(('http:', 'https:'))], urls

    browser.execute_script('window.scrollTo(0, 0)')
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / 'report.png'
    browser.save_screenshot(str(screenshot))
    print(f'report screenshot: {screenshot}')
    errors = [entry for entry in _console(browser) if entry['level'] == 'SEVERE']
    assert not errors, errors


def _object(object_id: str, position: list[float]) -> SpatialObject:
    lifted = Lifted3D(
        np.asarray(position, dtype=float),
        np.diag([0.02, 0.01, 0.005]) ** 2,
        np.array([0.3, 0.4, 0.3]),
        0.9,
    )
    return SpatialObject(object_id, object_id.rsplit('_', 1)[0], 1.0, PixelBox(1, 1, 9, 9), lifted)


def test_memory_map_and_cards_without_pictures_draw(browser: Any, tmp_path: Path) -> None:
    builder = ReportBuilder()
    for index in range(3):
        scene = Scene(
            stamp_ns=(index + 1) * 10**9,
            frame_id='odom',
            camera_frame_id='camera_optical',
            objects=[
                _object('chair_0', [2.0, 0.5 * index, 0.4]),
                _object('mug_0', [1.5, -0.5, 0.8]),
            ],
            latency_ms=50.0 + index,
            inference_ms=30.0,
        )
        builder.add(scene)  # no image, no depth: a card of numbers only
    builder.set_memory(
        [
            {'id': 'chair_0', 'label': 'chair', 'position': [2.0, 0.5, 0.4], 'state': 0},
            {'id': 'mug_0', 'label': 'mug', 'position': [1.5, -0.5, 0.8], 'state': 1},
        ],
        'odom',
        camera_path=[[0.0, 0.0, 1.0], [0.2, 0.1, 1.0], [0.4, 0.1, 1.0]],
    )
    path = builder.write(tmp_path / 'report.html', ReportMeta(title='memory'))
    _console(browser)
    _open(browser, path)
    inked, total, _ = _ink(browser, browser.find_element('id', 'memory-map'))
    assert inked > 0.02 * total, f'memory map nearly blank: {inked} of {total} pixels'
    _wait(browser, CARD_RENDERED_JS, 'the first card was not drawn', 0)
    inked, total, _ = _ink(browser, _card(browser, 0).find_element('css selector', 'canvas.map'))
    assert inked > 0.02 * total
    errors = [entry for entry in _console(browser) if entry['level'] == 'SEVERE']
    assert not errors, errors

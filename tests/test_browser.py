"""The explorer's page in a real browser (Debian's chromium, driven by Playwright) against the real
server on tiny runs: what the page shows must be what charlm computes, with no console error and no
request leaving the page's own origin."""

from __future__ import annotations

import json
import math
import shutil
from importlib import resources
from pathlib import Path

import pytest
import torch
from tests.explorer_runs import TEXT, make_run, plant_vowel_unit

import charlm
from charlm import GenerateConfig
from charlm.inspection.reading import read, score, where_bits_go

pytestmark = pytest.mark.browser

# A text the runs did not train on, with quotes, capitals and a newline.
READ_TEXT = ("The Time Traveller looked at the machine. \"Is it,\" said he, \"in my time?\"\n"
             "'Never,' answered the Psychologist.")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """r0: 2x32 LSTM, r1: 1-layer GRU, r2: bidirectional LSTM, r3: r0 with a planted vowel unit."""
    root = tmp_path_factory.mktemp("explorer")
    lstm = make_run(root / "lstm")
    gru = make_run(root / "gru", cell="gru", num_layers=1)
    bi = make_run(root / "bi", bidirectional=True)
    vowel = root / "vowel"
    shutil.copytree(lstm, vowel)
    plant_vowel_unit(vowel, layer=0, unit=3)
    return [lstm, gru, bi, vowel]


@pytest.fixture(scope="module")
def server(runs):
    from charlm.serve import Limits, start

    # A long generation must be able to outlast the Stop click, so the cap on its length is raised.
    srv = start(runs, host="127.0.0.1", port=0, limits=Limits(max_preds=200_000))
    yield srv
    srv.close()


class Watched:
    """A page with every console error, page error and request to another origin recorded."""

    def __init__(self, context, url: str) -> None:
        self.url, self.errors, self.outside = url, [], []
        self.page = context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning")
                     else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("request", lambda r: None if r.url.startswith(url) else self.outside.append(r.url))
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='true']")

    def check_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.outside == [], self.outside


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    yield ctx
    ctx.close()


@pytest.fixture
def watched(context, server):
    """One page per test; whatever the test does, it must leave no console error and no foreign request."""
    w = Watched(context, server.url)
    yield w
    w.check_clean()


def choose(page, run_id: str, tab: str) -> None:
    page.select_option("#run", run_id)
    page.click(f"#tab-{tab}")


# ---- loading ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_page_loads_clean_with_runs_and_keyboard_tabs(watched):
    page = watched.page
    options = page.eval_on_selector_all("#run option", "els => els.map(e => e.value)")
    assert options == ["r0", "r1", "r2", "r3"]
    assert "LSTM 2×32" in page.inner_text("#run-desc")
    page.focus("#tab-read")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-write", "aria-selected") == "true"
    assert page.evaluate("document.activeElement.id") == "tab-write"
    assert page.is_visible("#view-write") and not page.is_visible("#view-read")
    page.keyboard.press("End")
    assert page.get_attribute("#tab-training", "aria-selected") == "true"
    page.wait_for_selector("#training-chart svg polyline")  # the curves of metrics.jsonl
    assert page.locator("#training-samples li").count() == 3  # one sample per epoch


@pytest.mark.slow
def test_the_training_view_follows_a_run_still_training(watched, runs):
    page = watched.page
    choose(page, "r3", "training")
    page.wait_for_selector("#training-chart svg polyline")
    assert page.locator("#training-samples li").count() == 3
    metrics = runs[3] / "metrics.jsonl"
    last = json.loads(metrics.read_text(encoding="utf-8").splitlines()[-1])
    with metrics.open("a", encoding="utf-8") as f:  # what a trainer in another process appends
        f.write(json.dumps({**last, "epoch": last["epoch"] + 1, "sample": "The fourth epoch"}) + "\n")
    page.wait_for_function("() => document.querySelectorAll('#training-samples li').length === 4",
                           timeout=15_000)  # no reload: the page polls
    assert "The fourth epoch" in page.inner_text("#training-samples")


def test_the_page_is_es_modules_each_served_as_javascript(watched):
    """The entry module brings in every other by its relative imports, each fetched from the server
    as JavaScript; none of the page's names leaks into the global scope, as a classic script's would."""
    page = watched.page
    scripts = {}  # file name -> Content-Type, of every script the page loads

    def note(response) -> None:
        if response.url.endswith(".js"):
            scripts[response.url.rsplit("/", 1)[-1]] = response.headers.get("content-type", "")

    page.on("response", note)
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    static = resources.files("charlm.serve").joinpath("static")
    assert sorted(scripts) == sorted(entry.name for entry in static.iterdir() if entry.name.endswith(".js"))
    assert all(kind.startswith("text/javascript") for kind in scripts.values()), scripts
    assert page.evaluate("typeof state === 'undefined' && typeof main === 'undefined'")


def test_an_error_shows_in_the_alert_bar(context, server):
    w = Watched(context, server.url)
    w.page.fill("#read-text", "")
    w.page.click("#read-go")
    w.page.wait_for_selector("#error[role='alert']:not([hidden])")
    assert "token" in w.page.inner_text("#error-text")
    # The browser itself logs the 400 answer; nothing else may reach the console.
    assert all("status of 400" in e for e in w.errors), w.errors
    assert w.outside == []


# ---- Read -------------------------------------------------------------------------------------

def read_on_page(page, text_file: Path) -> None:
    page.set_input_files("#read-file", str(text_file))  # read by the page with FileReader, then scored
    page.wait_for_selector("#read-result:not([hidden])")


def test_bits_per_character_equal_evaluate(watched, runs, tmp_path):
    path = tmp_path / "read.txt"
    path.write_text(READ_TEXT, encoding="utf-8")
    read_on_page(watched.page, path)
    shown = float(watched.page.get_attribute("#read-bpc", "data-bpc"))
    result, token, _ = charlm.evaluate(runs[0], corpus=str(path))
    assert token == "char"
    assert shown == pytest.approx(result.bits_per_token, abs=1e-3)
    assert watched.page.locator("#read-out .tok").count() == len(READ_TEXT)
    assert watched.page.is_visible("#read-summary .bar-row.model")  # the compressors' baselines
    # Where the bits go by a letter's place in its word: what charlm.inspection.reading computes.
    run = charlm.load(runs[0])
    reading = read(run, READ_TEXT)
    parts = where_bits_go(reading, score(run.model, reading.ids))
    places = watched.page.eval_on_selector_all("#read-summary .by-place .bar-row",
                                               "rows => rows.map(r => [r.dataset.place, r.textContent])")
    assert [p for p, _ in places] == list(parts.by_place)
    assert all(f"{parts.by_place[p].bits:.2f}" in shown for p, shown in places)


def top5_of_model(run_dir: Path, text: str, position: int) -> tuple[list[str], list[float]]:
    """The model's five likeliest tokens at `position`, from the logits after text[:position]."""
    run = charlm.load(run_dir)
    ids = torch.tensor([run.vocab[list(text[:position])]])
    run.model.eval()
    with torch.no_grad():
        logits, _ = run.model(ids, run.model.begin_state(1, torch.device("cpu")))
    probs, top = torch.topk(torch.softmax(logits[0, -1].double(), dim=-1), 5)
    return run.vocab.to_tokens(top.tolist()), probs.tolist()


@pytest.mark.slow
@pytest.mark.parametrize("position", [1, 17, 80])
def test_hover_shows_the_models_top_five(watched, runs, tmp_path, position):
    page = watched.page
    page.fill("#read-text", READ_TEXT)
    page.click("#read-go")
    page.wait_for_selector("#read-result:not([hidden])")
    page.hover(f"#read-out .tok[data-i='{position}']")
    page.wait_for_selector("#tip:not([hidden]) .alt")
    tokens = page.eval_on_selector_all("#tip .alt", "els => els.map(e => e.dataset.tok)")
    probs = page.eval_on_selector_all("#tip .alt", "els => els.map(e => Number(e.dataset.p))")
    want_tokens, want_probs = top5_of_model(runs[0], READ_TEXT, position)
    assert tokens == want_tokens
    assert probs == pytest.approx(want_probs, abs=1e-3)


def test_keyboard_focus_shows_the_tooltip(watched):
    page = watched.page
    page.click("#read-go")
    page.wait_for_selector("#read-result:not([hidden])")
    page.focus("#read-out")
    page.keyboard.press("ArrowRight")  # the first character: it has no score
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.i") == "1"
    page.wait_for_selector("#tip:not([hidden]) .alt")
    assert "probability" in page.inner_text("#tip")


def test_clicking_a_character_colours_the_ones_before_it_by_their_share_in_it(watched, runs):
    page = watched.page
    page.fill("#read-text", READ_TEXT)
    page.click("#read-go")
    page.wait_for_selector("#read-result:not([hidden])")
    position = 40
    page.click(f"#read-out .tok[data-i='{position}']")
    page.wait_for_selector("#read-why:not([hidden])")
    shares = page.eval_on_selector_all("#read-out .tok[data-share]",
                                       "els => els.map(e => [Number(e.dataset.i), Number(e.dataset.share)])")
    run = charlm.load(runs[0])
    found = charlm.attribute(run.model, read(run, READ_TEXT).ids, position, window=200)
    assert [i for i, _ in shares] == list(range(position))  # every character before it, in a 200 window
    assert [s for _, s in shares] == pytest.approx((found.scores / math.log(2)).tolist(), abs=2e-3)
    assert page.locator("#read-out .tok.why-target").get_attribute("data-i") == str(position)
    assert "Why" in page.inner_text("#why-head")
    page.hover("#read-out .tok[data-i='3']")  # the tooltip gives the share too
    page.wait_for_selector("#tip:not([hidden])")
    assert "share in" in page.inner_text("#tip")
    page.click("#why-clear")  # back to the surprisal colours
    assert page.is_hidden("#read-why") and page.locator("#read-out .tok[data-share]").count() == 0


def test_a_unit_held_reads_and_writes_as_the_library_does_and_units_rank_by_cost(watched, runs):
    from charlm.inspection.intervention import Clamp, generate_clamped, read_clamped

    page = watched.page
    choose(page, "r0", "neurons")
    page.fill("#neuron-text", READ_TEXT)
    page.select_option("#neuron-layer", "1:c")
    page.fill("#neuron-unit", "4")
    page.fill("#hold-value", "2.5")
    page.click("#hold-read")
    page.wait_for_selector("#hold-read-result:not([hidden])")
    run = charlm.load(runs[0])
    ids = read(run, READ_TEXT).ids
    free, held = read_clamped(run.model, ids, [[], [Clamp(1, "c", 4, 2.5)]]).mean(dim=1)
    assert float(page.get_attribute("#hold-summary", "data-held")) == pytest.approx(float(held), abs=1e-4)
    assert float(page.get_attribute("#hold-summary", "data-free")) == pytest.approx(float(free), abs=1e-4)
    assert page.locator("#hold-out .tok").count() == len(READ_TEXT)
    page.fill("#hold-prefix", "The ")
    page.click("#hold-write")
    page.wait_for_selector("#hold-write-result:not([hidden])")
    config = GenerateConfig(num_preds=200, temperature=0.8, seed=1)  # what the page asks for
    want = generate_clamped(run.model, run.vocab, "The ", config, [Clamp(1, "c", 4, 2.5)])
    shown = tuple(page.eval_on_selector(f"#hold-{which}", "e => e.textContent") for which in ("held", "free"))
    assert shown == want
    page.click("#hold-rank")
    page.wait_for_selector("#hold-ranking .unit-btn")
    costs = page.eval_on_selector_all("#hold-ranking .unit-btn",
                                      "els => els.map(e => Number(e.dataset.cost))")
    assert len(costs) == 12 and costs == sorted(costs, reverse=True)


COLOURED = "els => els.map(e => [e.textContent, e.style.backgroundColor])"


def test_a_saved_view_opens_from_disk_with_its_colours_and_tooltips(watched, browser, tmp_path):
    page = watched.page
    page.fill("#read-text", READ_TEXT)
    page.click("#read-go")
    page.wait_for_selector("#read-result:not([hidden])")
    page.click("#read-out .tok[data-i='40']")  # with a why, as the page showed it
    page.wait_for_selector("#read-why:not([hidden])")
    live = page.eval_on_selector_all("#read-out .tok", COLOURED)
    with page.expect_download() as info:
        page.click("#save-view")
    saved = tmp_path / "saved.html"
    info.value.save_as(saved)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, offline=True)
    errors, outside = [], []
    try:
        opened = context.new_page()
        opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        opened.on("request", lambda r: None if r.url == saved.as_uri() else outside.append(r.url))
        opened.goto(saved.as_uri())
        assert opened.eval_on_selector_all("#read-out .tok", COLOURED) == live  # same text, same colours
        assert opened.locator("script").count() == 0 and opened.locator("button").count() == 0
        assert "Why" in opened.inner_text("#why-head")
        tip = opened.get_attribute("#read-out .tok[data-i='12']", "data-tip")
        assert "probability" in tip and "surprisal" in tip and "share in" in tip
        opened.hover("#read-out .tok[data-i='12']")
        after = opened.eval_on_selector("#read-out .tok[data-i='12']",
                                        "e => getComputedStyle(e, '::after').content")
        assert "probability" in after  # the tooltip shows, by CSS alone
        assert errors == [] and outside == []  # nothing refused by its policy, nothing fetched
    finally:
        context.close()


@pytest.mark.parametrize("view", ["read", "write", "neurons", "compare", "training"])
def test_nothing_runs_off_a_390_pixel_phone_screen(browser, server, view):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        watched = Watched(ctx, server.url)
        page = watched.page
        page.click(f"#tab-{view}")
        if view == "read":
            page.fill("#read-text", READ_TEXT)
            page.click("#read-go")
            page.wait_for_selector("#read-result:not([hidden])")
        # every element that is shown ends inside the screen (a tab bar may scroll sideways itself)
        beyond = page.evaluate("""() => [...document.querySelectorAll('body *')].filter((e) => {
            const r = e.getBoundingClientRect();
            const scrolled = e.closest('.tabs') && e.closest('.tabs') !== e;
            return r.width > 0 && r.height > 0 && !scrolled && r.right > innerWidth + 0.5;
        }).map((e) => e.id || e.className || e.tagName)""")
        assert beyond == []
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        tabs = page.evaluate("(() => { const t = document.querySelector('.tabs'); return [t.scrollWidth, "
                             "t.clientWidth, getComputedStyle(t).overflowX]; })()")
        assert tabs[0] <= tabs[1] or tabs[2] == "auto"  # every tab is on screen, or the bar scrolls to it
        watched.check_clean()
    finally:
        ctx.close()


# ---- Write ------------------------------------------------------------------------------------

def fill_generation(page, prefix: str, config: GenerateConfig) -> None:
    page.fill("#write-prefix", prefix)
    page.fill("#write-num-preds", str(config.num_preds))
    page.fill("#write-temperature", str(config.temperature))
    page.fill("#write-top-k", str(config.top_k))
    page.fill("#write-top-p", str(config.top_p))
    page.fill("#write-num-samples", str(config.num_samples))
    page.fill("#write-seed-input", "" if config.seed is None else str(config.seed))
    page.set_checked("#write-greedy", config.greedy)


def generated(page) -> list[str]:
    page.wait_for_selector("#write-status[data-state='done']", timeout=30_000)
    return page.eval_on_selector_all("#write-out .sample-text", "els => els.map(e => e.textContent)")


def expected(run_dir: Path, prefix: str, config: GenerateConfig) -> list[str]:
    run = charlm.load(run_dir)
    return charlm.generate(run.model, run.vocab, prefix, config)


@pytest.mark.parametrize("config", [
    GenerateConfig(num_preds=120, temperature=0.8, top_k=5, top_p=0.9, seed=7, num_samples=2),
    GenerateConfig(num_preds=60, greedy=True, seed=1),
], ids=["sampled", "greedy"])
@pytest.mark.slow
def test_seeded_generation_is_charlm_generate(watched, runs, config):
    page = watched.page
    choose(page, "r1", "write")
    fill_generation(page, "The Time", config)
    assert page.is_disabled("#write-stop")  # Stop only while generating
    page.click("#write-go")
    assert generated(page) == expected(runs[1], "The Time", config)
    assert page.get_attribute("#write-seed", "data-seed") == str(config.seed)
    assert page.is_disabled("#write-stop")


def test_generation_without_a_seed_shows_the_seed_it_used(watched, runs):
    page = watched.page
    choose(page, "r0", "write")
    fill_generation(page, "The ", GenerateConfig(num_preds=40, seed=None))
    page.click("#write-go")
    texts = generated(page)
    seed = int(page.get_attribute("#write-seed", "data-seed"))
    assert texts == expected(runs[0], "The ", GenerateConfig(num_preds=40, seed=seed))
    page.hover("#write-out .sample-text .tok[data-i='3']")  # a generated character has its probability
    page.wait_for_selector("#tip:not([hidden])")
    assert "probability" in page.inner_text("#tip")


def test_clicking_a_written_character_shows_why_over_the_text_up_to_it(watched, runs):
    page = watched.page
    choose(page, "r0", "write")
    fill_generation(page, "The Time ", GenerateConfig(num_preds=30, greedy=True))
    page.click("#write-go")
    (text,) = generated(page)
    page.click("#write-out .sample-text .tok[data-i='20']")  # the 21st written character
    page.wait_for_selector("#write-why:not([hidden])")
    position = len("The Time ") + 20
    shares = page.eval_on_selector_all("#write-why-text .tok[data-share]",
                                       "els => els.map(e => [Number(e.dataset.i), Number(e.dataset.share)])")
    run = charlm.load(runs[0])
    found = charlm.attribute(run.model, read(run, text[:position + 1]).ids, position, window=200)
    assert [i for i, _ in shares] == list(range(position))
    assert [s for _, s in shares] == pytest.approx((found.scores / math.log(2)).tolist(), abs=2e-3)
    target = page.locator("#write-why-text .tok.why-target")
    assert target.get_attribute("data-i") == str(position) and target.inner_text() == text[position]
    assert "Why" in page.inner_text("#write-why-head")
    page.click("#write-why-clear")
    assert page.is_hidden("#write-why")


@pytest.mark.slow
def test_two_tabs_generating_at_once_each_get_their_own_text(context, server, runs):
    config = GenerateConfig(num_preds=1500, temperature=1.0, seed=11)
    tabs = [Watched(context, server.url) for _ in range(2)]
    for w, prefix in zip(tabs, ["The ", "'Never"]):
        choose(w.page, "r0", "write")
        fill_generation(w.page, prefix, config)
    for w in tabs:
        w.page.click("#write-go")
    texts = [generated(w.page) for w in tabs]
    assert texts[0] == expected(runs[0], "The ", config)
    assert texts[1] == expected(runs[0], "'Never", config)
    for w in tabs:
        w.check_clean()


def test_stop_ends_a_long_generation(watched):
    page = watched.page
    choose(page, "r0", "write")
    fill_generation(page, "The ", GenerateConfig(num_preds=200_000, seed=3))
    page.click("#write-go")
    page.wait_for_selector("#write-out .sample-text .tok")
    assert page.is_enabled("#write-stop")
    page.click("#write-stop")
    page.wait_for_selector("#write-status[data-state='stopped']")
    count = page.locator("#write-out .sample-text .tok").count()
    assert 0 < count < 200_000
    page.wait_for_timeout(300)
    assert page.locator("#write-out .sample-text .tok").count() == count  # nothing more arrives
    # The server let go of the model: a new generation runs at once.
    fill_generation(page, "The ", GenerateConfig(num_preds=20, greedy=True))
    page.click("#write-go")
    assert len(generated(page)[0]) == len("The ") + 20


def test_pick_the_next_character(watched, runs):
    page = watched.page
    choose(page, "r0", "write")
    page.click("#mode-pick")
    page.fill("#write-prefix", "The Tim")
    page.click("#pick-start")
    page.wait_for_selector("#pick-choices .choice")
    first = page.eval_on_selector_all("#pick-choices .choice", "els => els.map(e => e.dataset.tok)")
    want, _ = top5_of_model(runs[0], "The Tim", len("The Tim"))
    assert first[:5] == want
    page.click("#pick-choices .choice >> nth=0")
    shows = "(want) => document.querySelector('#pick-text').textContent === want"  # a function: no eval
    page.wait_for_function(shows, arg="The Tim" + first[0])
    assert page.is_enabled("#pick-undo")
    page.click("#pick-undo")
    page.wait_for_function(shows, arg="The Tim")
    assert page.is_disabled("#pick-undo")


def test_a_bidirectional_run_cannot_write(watched):
    page = watched.page
    choose(page, "r2", "write")
    assert page.is_visible("#write-banner")
    assert "bidirectional" in page.inner_text("#write-banner")
    assert page.is_disabled("#write-go")
    choose(page, "r0", "write")
    assert not page.is_visible("#write-banner")
    assert page.is_enabled("#write-go")


# ---- Neurons ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_planted_vowel_unit_is_found_first(watched):
    page = watched.page
    choose(page, "r3", "neurons")
    page.fill("#neuron-text", TEXT[:400])
    page.select_option("#find-preset", "vowel")
    page.click("#find-go")
    page.wait_for_selector("#find-results .unit-btn")
    best = page.locator("#find-results .unit-btn").first
    assert (best.get_attribute("data-layer"), best.get_attribute("data-unit")) == ("0", "3")
    # The best unit is shown: its values colour the text, with a chart and its top contexts.
    page.wait_for_selector("#neuron-title[data-unit='3']")
    page.wait_for_selector("#neuron-chart svg polyline")
    contexts = page.eval_on_selector_all("#neuron-contexts mark", "els => els.map(e => e.textContent)")
    assert contexts and all(ch in "aeiouAEIOU" for ch in contexts)


@pytest.mark.slow
def test_a_selection_of_the_text_marks_its_tokens(watched):
    page = watched.page
    choose(page, "r0", "neurons")
    page.fill("#neuron-text", READ_TEXT)
    page.click("#neuron-go")
    page.wait_for_selector("#neuron-out .tok")
    page.evaluate("""() => {
        const spans = document.querySelectorAll('#neuron-out .tok');
        const range = document.createRange();
        range.setStart(spans[4].firstChild, 0);
        range.setEnd(spans[12].firstChild, 1);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        document.querySelector('#neuron-out').dispatchEvent(new MouseEvent('mouseup', {bubbles: true}));
    }""")
    assert page.inner_text("#find-selection").endswith("(9 at 4)")
    page.click("#find-go")
    page.wait_for_selector("#find-results .unit-btn")
    marked = page.eval_on_selector_all("#neuron-out .tok.marked", "els => els.map(e => Number(e.dataset.i))")
    assert marked == list(range(4, 13))


# ---- Compare ----------------------------------------------------------------------------------

def test_compare_shows_both_runs_bits(watched, runs, tmp_path):
    path = tmp_path / "compare.txt"
    path.write_text(READ_TEXT, encoding="utf-8")
    page = watched.page
    page.click("#tab-compare")
    page.select_option("#compare-a", "r0")
    page.select_option("#compare-b", "r1")
    page.fill("#compare-text", READ_TEXT)
    page.click("#compare-go")
    page.wait_for_selector("#compare-result:not([hidden])")
    for selector, run_dir in (("#compare-bpc-a", runs[0]), ("#compare-bpc-b", runs[1])):
        result, _, _ = charlm.evaluate(run_dir, corpus=str(path))
        shown = float(page.get_attribute(selector, "data-bpc"))
        assert shown == pytest.approx(result.bits_per_token, abs=1e-3)
    assert "A better" in page.inner_text("#compare-legend")
    first = page.locator("#compare-largest .context-btn").first
    position = first.get_attribute("data-i")
    first.click()
    assert page.evaluate("document.activeElement.dataset.i") == position
    assert not math.isnan(float(position))

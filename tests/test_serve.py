"""charlm serve: the explorer's HTTP API answers what charlm's own functions give, and refuses the rest.

The server runs on a free port in a thread of the test process, on tiny runs made in a temporary
folder; requests go through http.client, so that every header (Host, Origin) is the test's choice.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from importlib import resources

import pytest
from tests.explorer_runs import TEXT, make_run, plant_vowel_unit

from charlm import GenerateConfig, attribute, evaluate, generate, load
from charlm.cli import main
from charlm.inspection.intervention import Clamp, read_clamped
from charlm.inspection.reading import read
from charlm.serve import ApiError, Limits, start
from charlm.serve.server import QUEUE, Gate, static_files

SAMPLE = 'He said: "Never," and looked at the Time Traveller.\n'


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    lstm = make_run(root / "lstm", epochs=2)
    gru = make_run(root / "gru", cell="gru", impl="scratch", epochs=1)
    planted = make_run(root / "planted", epochs=1)
    plant_vowel_unit(planted)
    bidirectional = make_run(root / "bi", epochs=1, bidirectional=True, num_layers=1, sample_every=0)
    return [lstm, gru, planted, bidirectional]


@pytest.fixture(scope="module")
def server(runs):
    server = start(runs, limits=Limits(max_preds=10**6))
    yield server
    server.close()


def request(server, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None):
    """(status, headers, body bytes) of one request; JSON bodies unless `raw` is given."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    sent = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers={**sent, **(headers or {})})
    response = conn.getresponse()
    result = response.status, dict(response.getheaders()), response.read()
    conn.close()
    return result


def post(server, path: str, body: dict, **kwargs) -> tuple[int, dict]:
    status, _, data = request(server, "POST", path, body, **kwargs)
    return status, json.loads(data)


def generation_lines(server, body: dict) -> list[dict]:
    status, headers, data = request(server, "POST", "/api/generate", body)
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson"), data
    return [json.loads(line) for line in data.decode().splitlines()]


def generated_texts(lines: list[dict], prefix: str, num_samples: int = 1) -> list[str]:
    chunks = [line["tokens"] for line in lines if "tokens" in line]
    return [prefix + "".join("".join(chunk[i]) for chunk in chunks) for i in range(num_samples)]


# ---- the answers ----

@pytest.mark.slow
def test_the_runs_are_described_with_their_vocabulary_and_layers(server, runs):
    status, info = 200, json.loads(request(server, "GET", "/api/runs")[2])
    assert status == 200 and [r["id"] for r in info["runs"]] == ["r0", "r1", "r2", "r3"]
    lstm = info["runs"][0]
    assert lstm["vocab"] == load(runs[0]).vocab.idx_to_token
    assert lstm["layers"] == [{"layer": 0, "kind": "h", "size": 32}, {"layer": 0, "kind": "c", "size": 32},
                              {"layer": 1, "kind": "h", "size": 32}, {"layer": 1, "kind": "c", "size": 32}]
    assert [r["can_generate"] for r in info["runs"]] == [True, True, True, False]
    assert "vowel" in info["presets"] and info["limits"]["max_preds"] == 10**6


def test_the_page_and_its_files_are_served_with_a_strict_policy(server):
    modules = [f"/static/{name}" for name in _page_modules()]
    for path, kind in [("/", "text/html"), ("/static/app.css", "text/css"),
                       *[(module, "text/javascript") for module in modules]]:
        status, headers, _ = request(server, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind), path
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert set(static_files()) == {"/", "/static/app.css", *modules}


_IMPORT = re.compile(r'^import [^;]*?"([^"]*)";$', re.M)


def _page_modules() -> list[str]:
    """The page's ES modules, followed from the entry (index.html's `type="module"` script) through
    their imports; each must import its neighbours by a relative path, as a browser resolves them
    against /static/."""
    static = resources.files("charlm.serve").joinpath("static")
    page = static.joinpath("index.html").read_text(encoding="utf-8")
    assert '<script type="module" src="/static/app.js">' in page
    seen, todo = [], ["app.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        for target in _IMPORT.findall(static.joinpath(name).read_text(encoding="utf-8")):
            assert re.fullmatch(r"\./[a-z-]+\.js", target), f"{name} imports {target!r}"
            todo.append(target[2:])
    return sorted(seen)


def test_every_script_in_the_static_folder_is_a_module_the_page_imports():
    static = resources.files("charlm.serve").joinpath("static")
    scripts = sorted(entry.name for entry in static.iterdir() if entry.name.endswith(".js"))
    assert _page_modules() == scripts


def test_analyze_gives_the_bits_charlm_evaluate_gives(server, runs, tmp_path):
    (tmp_path / "t.txt").write_text(SAMPLE * 3, encoding="utf-8")
    status, answer = post(server, "/api/analyze", {"run": "r0", "text": SAMPLE * 3, "top": 5})
    assert status == 200
    expected = evaluate(runs[0], corpus=str(tmp_path / "t.txt"))[0].bits_per_token
    assert answer["bpc"] == pytest.approx(expected, abs=1e-4)
    assert answer["tokens"] == list(SAMPLE * 3) and answer["bits"][0] is None
    assert answer["num_predicted"] == len(SAMPLE * 3) - 1
    assert len(answer["top_ids"][1]) == 5 and answer["ranks"][1] >= 1
    assert set(answer["summary"]["baselines"]) == {"zlib", "bz2", "lzma"}


def test_a_pasted_gutenberg_book_is_read_without_its_header_and_licence(server):
    header = "The Project Gutenberg eBook of Samples\n*** START OF THE PROJECT GUTENBERG EBOOK SAMPLES ***\n"
    licence = "*** END OF THE PROJECT GUTENBERG EBOOK SAMPLES ***\nTHE FULL PROJECT GUTENBERG LICENSE\n"
    status, answer = post(server, "/api/analyze", {"run": "r0", "text": header + SAMPLE * 3 + licence})
    assert status == 200
    assert answer["tokens"] == list(SAMPLE * 3) and answer["left_out"] == len(header) + len(licence)


def test_seeded_generation_streams_what_generate_gives(server, runs):
    run = load(runs[0])
    settings = {"num_preds": 150, "temperature": 0.8, "top_k": 10, "top_p": 0.95, "seed": 7, "num_samples": 2}
    lines = generation_lines(server, {"run": "r0", "prefix": "The ", **settings})
    assert lines[0]["seed"] == 7 and lines[-1] == {"done": True}
    expected = generate(run.model, run.vocab, "The ", GenerateConfig(**settings))
    assert generated_texts(lines, "The ", 2) == expected


def test_a_generation_without_a_seed_says_the_seed_it_used_so_it_replays(server, runs):
    lines = generation_lines(server, {"run": "r1", "prefix": "The ", "num_preds": 40})
    run = load(runs[1])
    seed = lines[0]["seed"]
    assert generated_texts(lines, "The ") == generate(run.model, run.vocab, "The ",
                                                      GenerateConfig(num_preds=40, seed=seed))


def test_two_generations_at_once_each_get_what_one_alone_gets(server, runs):
    run = load(runs[0])
    bodies = [{"run": "r0", "prefix": "The ", "num_preds": 800, "seed": seed} for seed in (1, 2)]
    results: dict[int, list[str]] = {}
    threads = [threading.Thread(target=lambda i=i: results.update({i: generated_texts(
        generation_lines(server, bodies[i]), "The ")})) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, seed in enumerate((1, 2)):
        assert results[i] == generate(run.model, run.vocab, "The ", GenerateConfig(num_preds=800, seed=seed))


def test_a_page_that_stops_reading_ends_its_generation(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    body = json.dumps({"run": "r0", "prefix": "The ", "num_preds": 10**6, "seed": 0}).encode()
    conn.request("POST", "/api/generate", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert json.loads(response.readline())["seed"] == 0
    assert "tokens" in json.loads(response.readline())
    conn.sock.shutdown(socket.SHUT_RDWR)  # what a browser's AbortController does
    conn.close()
    deadline = time.monotonic() + 20  # a million tokens would hold the model for minutes
    while server.gate._count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.gate._count == 0
    assert post(server, "/api/next", {"run": "r0", "text": "The"})[0] == 200


def test_the_next_tokens_are_the_models_likeliest(server, runs):
    status, answer = post(server, "/api/next", {"run": "r2", "text": "The Time", "top": 3})
    assert status == 200 and len(answer["tokens"]) == 3
    assert answer["probs"] == sorted(answer["probs"], reverse=True)


def test_the_planted_vowel_unit_is_found_and_fires_on_vowels(server):
    text = TEXT[:600]
    status, found = post(server, "/api/units/search",
                         {"run": "r2", "text": text, "mask": {"preset": "vowel"}})
    assert status == 200 and found["units"][0]["layer"] == 0 and found["units"][0]["unit"] == 3
    assert found["marked"] == sum(ch in "aeiouAEIOU" for ch in text)
    status, unit = post(server, "/api/units", {"run": "r2", "text": text, "layer": 0, "kind": "h", "unit": 3})
    assert status == 200 and len(unit["values"]) == len(text)
    assert all(text[i] in "aeiouAEIOU" for i in unit["top"])


def test_a_run_still_training_is_shown_with_the_weights_it_saved_last(runs, tmp_path):
    training = tmp_path / "training"
    shutil.copytree(runs[0], training)
    text = TEXT[:600]
    live = start([training])
    try:
        before = post(live, "/api/units/search", {"run": "r0", "text": text, "mask": {"preset": "vowel"}})[1]
        plant_vowel_unit(training)  # as a trainer saving new weights would, each file replaced whole
        (tmp_path / "t.txt").write_text(text, encoding="utf-8")
        status, answer = post(live, "/api/analyze", {"run": "r0", "text": text})
        assert status == 200
        expected = evaluate(training, corpus=str(tmp_path / "t.txt"))[0].bits_per_token
        assert answer["bpc"] == pytest.approx(expected, abs=1e-4)
        after = post(live, "/api/units/search", {"run": "r0", "text": text, "mask": {"preset": "vowel"}})[1]
    finally:
        live.close()
    assert (before["units"][0]["layer"], before["units"][0]["unit"]) != (0, 3)
    assert (after["units"][0]["layer"], after["units"][0]["unit"]) == (0, 3)  # no stale cached trace


def test_units_can_be_searched_by_regex_and_by_spans(server):
    status, by_regex = post(server, "/api/units/search", {"run": "r0", "text": SAMPLE, "kinds": ["c"],
                                                          "mask": {"regex": "[A-Z]"}})
    assert status == 200 and all(u["kind"] == "c" for u in by_regex["units"])
    assert by_regex["marked"] == 4  # H, N, T, T
    status, by_spans = post(server, "/api/units/search", {"run": "r0", "text": SAMPLE,
                                                          "mask": {"spans": [[0, 2], [10, 16]]}})
    assert status == 200 and by_spans["marked"] == 8


def test_compare_gives_each_runs_bits_and_where_they_differ_most(server):
    status, answer = post(server, "/api/compare", {"runs": ["r0", "r1"], "text": SAMPLE})
    assert status == 200 and len(answer["bits"]) == 2
    a, b = answer["bits"]
    diffs = {i: abs(a[i] - b[i]) for i in range(1, len(a))}
    assert diffs[answer["largest"][0]] == pytest.approx(max(diffs.values()), abs=1e-3)
    assert answer["bpc"][0] == pytest.approx(sum(a[1:]) / (len(a) - 1), abs=1e-3)


def test_attribute_gives_each_earlier_characters_share_in_bits_as_charlm_attribute_does(server, runs):
    body = {"run": "r0", "text": SAMPLE, "position": 30, "window": 12}
    status, answer = post(server, "/api/attribute", body)
    assert status == 200 and (answer["start"], answer["method"]) == (18, "gradient")
    run = load(runs[0])
    found = attribute(run.model, read(run, SAMPLE).ids, 30, window=12)
    assert answer["scores"] == pytest.approx((found.scores / math.log(2)).tolist(), abs=1e-3)
    assert answer["bits"] == pytest.approx(-found.logprob / math.log(2), abs=1e-4)


def test_attribute_at_position_minus_one_explains_the_last_token_and_returns_the_window(server):
    # Write asks about a character it has just written: the text up to it, position -1.
    text = SAMPLE[:31]
    status, last = post(server, "/api/attribute", {"run": "r0", "text": text, "position": -1, "window": 12})
    status2, named = post(server, "/api/attribute",
                          {"run": "r0", "text": SAMPLE, "position": 30, "window": 12})
    assert status == status2 == 200
    assert last["position"] == 30 and last["scores"] == pytest.approx(named["scores"], abs=1e-6)
    assert "".join(last["tokens"]) == text[18:31]  # the 12 before it and the one explained


def test_attribution_asks_for_a_position_and_window_it_can_explain(server):
    status, answer = post(server, "/api/attribute", {"run": "r0", "text": SAMPLE, "position": 5,
                                                     "window": 1001})
    assert status == 413 and "'window' must be from 1 to 1000, got 1001" in answer["error"]
    status, answer = post(server, "/api/attribute", {"run": "r0", "text": SAMPLE, "position": 0})
    assert status == 400 and "'position' must be from 1 to" in answer["error"]
    status, answer = post(server, "/api/attribute", {"run": "r0", "text": SAMPLE, "position": 3,
                                                     "method": "saliency"})
    assert status == 400 and "'method' must be one of gradient, occlusion" in answer["error"]
    status, answer = post(server, "/api/attribute", {"run": "r3", "text": SAMPLE, "position": 3})
    assert status == 400 and "bidirectional" in answer["error"]


def test_a_held_unit_reads_the_text_again_beside_the_model_as_it_is(server, runs):
    clamp = {"layer": 1, "kind": "c", "unit": 4, "value": 3}
    status, answer = post(server, "/api/clamp", {"run": "r0", "text": SAMPLE, "clamps": [clamp]})
    assert status == 200
    run = load(runs[0])
    free, held = read_clamped(run.model, read(run, SAMPLE).ids, [[], [Clamp(1, "c", 4, 3.0)]])
    assert answer["bits"][0][1:] == pytest.approx(free.tolist(), abs=1e-3)
    assert answer["bits"][1][1:] == pytest.approx(held.tolist(), abs=1e-3)
    _, analyzed = post(server, "/api/analyze", {"run": "r0", "text": SAMPLE})
    assert answer["bpc"][0] == pytest.approx(analyzed["bpc"], abs=1e-4)  # nothing held: Read's bits


def test_writing_with_a_unit_held_comes_beside_the_same_seed_without_it(server, runs):
    body = {"run": "r0", "prefix": "The ", "num_preds": 30, "greedy": True,
            "clamps": [{"layer": 0, "kind": "h", "unit": 2, "value": 0.9}]}
    status, answer = post(server, "/api/clamp/generate", body)
    run = load(runs[0])
    assert status == 200 and answer["held"].startswith("The ")
    greedy = GenerateConfig(num_preds=30, greedy=True)
    assert answer["free"] == generate(run.model, run.vocab, "The ", greedy)[0]


def test_the_ablation_ranking_lists_the_costliest_units_first(server):
    status, answer = post(server, "/api/ablation", {"run": "r0", "text": SAMPLE, "limit": 5})
    costs = [u["cost"] for u in answer["units"]]
    assert status == 200 and len(costs) == 5 and costs == sorted(costs, reverse=True)
    assert {u["kind"] for u in answer["units"]} <= {"h", "c"}


def test_a_unit_that_is_not_there_cannot_be_held(server):
    body = {"run": "r0", "text": SAMPLE, "clamps": [{"layer": 0, "kind": "h", "unit": 32}]}
    status, answer = post(server, "/api/clamp", body)
    assert status == 400 and answer["error"] == "unit must be in [0, 32) (layer 0 h has 32 units), got 32"
    status, answer = post(server, "/api/clamp", {**body, "clamps": [{"layer": 0, "kind": "c", "unit": 1}],
                                                 "run": "r1"})
    assert status == 400 and "kind must be one of h for a GRU" in answer["error"]
    status, answer = post(server, "/api/ablation", {"run": "r0", "text": "a" * 2_001})
    assert status == 413 and "at most 2,000" in answer["error"]


def test_the_training_metrics_are_the_runs_metrics_jsonl(server, runs):
    status, _, data = request(server, "GET", "/api/runs/r0/metrics")
    lines = (runs[0] / "metrics.jsonl").read_text().splitlines()
    records = json.loads(data)["records"]
    assert status == 200 and [r["epoch"] for r in records] == [json.loads(line)["epoch"] for line in lines]


# ---- what is refused (docs/errors.md, "The explorer's server") ----

def test_a_foreign_host_is_refused(server):
    foreign = {"Host": f"evil.example:{server.server_port}"}  # a name that resolves here: DNS rebinding
    status, _, data = request(server, "GET", "/api/runs", headers=foreign)
    assert status == 403 and "Host" in json.loads(data)["error"]
    status, _, _ = request(server, "GET", "/", headers={"Host": "127.0.0.1:1"})  # another port
    assert status == 403
    assert request(server, "GET", "/", headers={"Host": f"localhost:{server.server_port}"})[0] == 200


def test_a_post_from_another_origin_is_refused(server):
    status, answer = post(server, "/api/analyze", {"run": "r0", "text": SAMPLE},
                          headers={"Origin": "http://evil.example"})
    assert status == 403 and "other web pages" in answer["error"]
    status, _ = post(server, "/api/analyze", {"run": "r0", "text": SAMPLE},
                     headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403


def test_an_oversized_body_is_refused_unread(server):
    status, _, data = request(server, "POST", "/api/analyze", raw=b" " * 1_000_001)
    assert status == 413 and "at most 1,000,000" in json.loads(data)["error"]


def test_a_body_that_is_not_json_is_refused(server):
    status, _, data = request(server, "POST", "/api/analyze", raw=b"run=r0",
                              headers={"Content-Type": "text/plain"})
    assert status == 415
    status, _, data = request(server, "POST", "/api/analyze", raw=b"{not json")
    assert status == 400 and "not JSON" in json.loads(data)["error"]


def test_an_unknown_run_is_not_found(server):
    status, answer = post(server, "/api/analyze", {"run": "r9", "text": SAMPLE})
    assert status == 404 and answer["error"] == "no run 'r9': this server shows r0, r1, r2, r3"
    assert request(server, "GET", "/api/runs/r9/metrics")[0] == 404


@pytest.mark.parametrize("path", ["/static/../../pyproject.toml", "/static/%2e%2e/server.py", "//etc/passwd",
                                  "/static/index.html", "/api/../static/app.js", "/static/app.js/..",
                                  "/static/../server.py", "/static/./dom.js", "/static//app.js"])
def test_no_path_reaches_a_file_off_the_list(server, path):
    status, _, data = request(server, "GET", path)
    assert status == 404 and b"[project]" not in data and b"root:" not in data


def test_caps_on_text_and_generation_are_4xx(server):
    status, answer = post(server, "/api/analyze", {"run": "r0", "text": "a" * 20_001})
    assert status == 413 and "at most 20,000" in answer["error"]
    status, answer = post(server, "/api/generate", {"run": "r0", "prefix": "The ", "num_samples": 9})
    assert status == 413 and "'num_samples' must be from 1 to 8" in answer["error"]
    status, answer = post(server, "/api/analyze", {"run": "r0", "text": SAMPLE, "top": 51})
    assert status == 413


def test_bad_settings_are_400_with_the_reason(server):
    status, answer = post(server, "/api/generate", {"run": "r0", "prefix": "The ", "temperature": -1})
    assert status == 400 and "temperature must be >= 0" in answer["error"]
    status, answer = post(server, "/api/generate", {"run": "r0", "prefix": "The ", "greedy": "yes"})
    assert status == 400 and "'greedy' must be bool" in answer["error"]
    status, answer = post(server, "/api/units/search", {"run": "r0", "text": SAMPLE, "mask": {"regex": "("}})
    assert status == 400 and "is not a regular expression" in answer["error"]
    status, answer = post(server, "/api/units/search",
                          {"run": "r0", "text": SAMPLE, "mask": {"regex": "zzz"}})
    assert status == 400 and "must mark some positions" in answer["error"]
    status, answer = post(server, "/api/analyze", {"run": "r0"})
    assert status == 400 and answer["error"] == "the request needs 'text'"


def test_a_bidirectional_run_cannot_generate(server):
    status, answer = post(server, "/api/generate", {"run": "r3", "prefix": "The "})
    assert status == 400 and "bidirectional" in answer["error"]
    assert post(server, "/api/next", {"run": "r3", "text": "The"})[0] == 400
    assert post(server, "/api/analyze", {"run": "r3", "text": SAMPLE})[0] == 200  # reading still works


def test_other_methods_are_not_allowed(server):
    assert request(server, "PUT", "/api/analyze", raw=b"{}")[0] == 405
    assert request(server, "POST", "/api/nothing", {"run": "r0"})[0] == 404


def test_past_a_full_queue_a_request_is_told_to_come_back(server):
    waiting: list[int] = []
    free = threading.Event()
    busy = threading.Thread(target=server.gate.run, args=(free.wait,))  # the model is busy
    busy.start()
    threads = [threading.Thread(target=lambda: waiting.append(post(server, "/api/next", {
        "run": "r0", "text": "The"})[0])) for _ in range(QUEUE)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while server.gate._count < QUEUE + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, headers, data = request(server, "POST", "/api/next", {"run": "r0", "text": "The"})
        assert status == 429 and headers["Retry-After"] == "1" and "busy" in json.loads(data)["error"]
    finally:
        free.set()
    for t in [busy, *threads]:
        t.join()
    assert waiting == [200] * QUEUE  # those in the queue were answered once the model was free


def test_a_port_in_use_is_one_line_naming_the_flag(runs, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(runs[0]), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"charlm: error: --port {port}: cannot listen on 127.0.0.1:{port}")
    assert "\n" not in err


# ---- where the model runs ----

def test_a_gate_working_in_one_thread_runs_every_computation_there():
    gate, stopped = Gate(), threading.Event()

    def work() -> None:
        try:
            gate.work_here()
        except KeyboardInterrupt:
            stopped.set()
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    while gate._jobs is None:  # until it takes work
        time.sleep(0.01)
    answers: list = []
    callers = [threading.Thread(target=lambda: answers.append(gate.run(threading.get_ident)))
               for _ in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert answers == [worker.ident] * 3  # not the callers' own threads
    with pytest.raises(ZeroDivisionError):  # a computation's error reaches its caller
        gate.run(lambda: 1 / 0)

    def interrupted() -> None:
        raise KeyboardInterrupt
    with pytest.raises(ApiError, match="stopping"):  # Ctrl-C in a computation: the server stops
        gate.run(interrupted)
    assert stopped.wait(5)
    assert gate.run(lambda: 42) == 42  # and then computations run in their callers' threads again


def _ctrl_c_as_in_a_shell() -> None:
    """A child started by a process that ignores SIGINT inherits the ignoring, and Python then raises
    no KeyboardInterrupt at all: some test of the suite leaves pytest so. A shell starts commands
    with Ctrl-C's default action, and so do these tests."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_CTRL_C_ELSEWHERE = """
import signal, threading, time
from charlm.serve.server import Gate

def press_ctrl_c_in_this_thread():
    time.sleep(0.5)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # the kernel may pick any thread

threading.Thread(target=press_ctrl_c_in_this_thread, daemon=True).start()
start = time.perf_counter()
try:
    Gate().work_here()
except KeyboardInterrupt:
    print(f"stopped after {time.perf_counter() - start:.1f} s")
"""


def test_a_ctrl_c_that_reaches_another_thread_still_stops_the_gate():
    # Seen in full-suite runs: `charlm serve` ignored Ctrl-C, its main thread asleep in the gate's
    # queue while the signal had gone to the thread that serves requests.
    done = subprocess.run([sys.executable, "-c", _CTRL_C_ELSEWHERE], capture_output=True, text=True,
                          timeout=60, preexec_fn=_ctrl_c_as_in_a_shell)
    assert done.returncode == 0, done.stderr
    assert float(re.search(r"stopped after ([\d.]+) s", done.stdout).group(1)) < 5


@pytest.mark.slow
def test_charlm_serve_answers_from_its_main_thread_and_stops_on_ctrl_c(runs, tmp_path):
    # -X faulthandler: if it does not stop, SIGABRT makes it print every thread's stack (below).
    command = [sys.executable, "-X", "faulthandler", "-m", "charlm", "serve", str(runs[0]), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_ctrl_c_as_in_a_shell)
    try:
        line = process.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        live = type("Live", (), {"server_port": port})()  # what request() needs of a server
        (tmp_path / "t.txt").write_text(SAMPLE, encoding="utf-8")
        status, answer = post(live, "/api/analyze", {"run": "r0", "text": SAMPLE})
        assert status == 200
        expected = evaluate(runs[0], corpus=str(tmp_path / "t.txt"))[0].bits_per_token
        assert answer["bpc"] == pytest.approx(expected, abs=1e-4)
        config = GenerateConfig(num_preds=80, temperature=0.9, seed=5)
        lines = generation_lines(live, {"run": "r0", "prefix": "The ", "num_preds": 80, "temperature": 0.9,
                                        "seed": 5})
        run = load(runs[0])
        assert generated_texts(lines, "The ") == generate(run.model, run.vocab, "The ", config)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            _, err = process.communicate(timeout=30)
            pytest.fail(f"charlm serve did not stop within 90 s of Ctrl-C; its threads were at:\n"
                        f"{err[-6000:]}")
    assert process.returncode == 0 and "Traceback" not in err


def test_the_english_model_explains_a_character_and_holds_a_unit_in_the_explorer():
    from charlm.serve import Explorer

    explorer = Explorer([load("english")])  # what `charlm serve` with no run shows
    why = explorer.attribute({"run": "r0", "text": SAMPLE, "position": 20, "window": 20})
    assert len(why["scores"]) == 20 and why["bits"] > 0
    held = explorer.clamp({"run": "r0", "text": SAMPLE, "clamps": [{"layer": 1, "kind": "c", "unit": 7,
                                                                     "value": 30}]})
    assert held["bpc"][1] != held["bpc"][0]

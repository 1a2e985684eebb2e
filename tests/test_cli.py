"""The command line end to end on a tiny corpus, and one-line errors for bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from charlm.checkpoint import load_trainer, run_configs
from charlm.cli import build_parser, main
from charlm.config import for_precision, from_recipe, load_recipe, recipe_names
from charlm.fields import to_flat

TEXT = "the time traveller for so it will be convenient to speak of him was expounding\n" * 20
# The book's setup on a small file (a text file's default is the auto recipe: tests/test_auto.py).
TINY = ["--recipe", "book", "--num-hiddens", "16", "--batch-size", "4", "--num-steps", "8", "--epochs", "3",
        "--max-tokens", "-1", "--eval-every", "1", "--sample-every", "1", "--device", "cpu"]


@pytest.fixture
def book(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(TEXT)
    return path



def train_losses(run_dir):
    """Training loss of each epoch, from a run folder's metrics.jsonl."""
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

def test_train_generate_evaluate_end_to_end(book, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--corpus", str(book), "--out", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert out.startswith("perplexity ") and "tokens/sec on cpu" in out and str(run) in out

    assert main(["generate", str(run), "--prefix", "time t", "--num-preds", "12", "--seed", "0"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("time t") and len(first.rstrip("\n")) == 6 + 12
    assert main(["generate", str(run), "--prefix", "time t", "--num-preds", "12", "--seed", "0"]) == 0
    assert capsys.readouterr().out == first  # same seed, same text

    assert main(["generate", str(run), "--num-samples", "3", "--num-preds", "5", "--greedy"]) == 0
    samples = capsys.readouterr().out[:-1].split("\n\n")  # the texts, each ending as generated
    assert len(samples) == 3 and len(set(samples)) == 1  # greedy: all the same

    assert main(["evaluate", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[0])
    assert report["perplexity"] > 1 and report["bits_per_character"] > 0 and "(val)" in report["data"]


def test_resume_from_the_command_line_counts_epochs_in_total(book, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--corpus", str(book), "--out", str(run), *TINY]) == 0
    assert main(["resume", str(run), "--epochs", "5"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5]


def test_resume_takes_a_cadence_as_train_does(book, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--corpus", str(book), "--out", str(run), *TINY, "--epochs", "1"]) == 0
    assert main(["resume", str(run), "--epochs", "2", "--eval-every", "3steps", "--sample-every", "0"]) == 0
    second = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][1:]
    mid_epoch = [r["step"] for r in second if "batch" in r and "val_loss" in r]
    assert mid_epoch and all(step % 3 == 0 for step in mid_epoch)


@pytest.mark.parametrize("argv, message", [
    (["train", "--corpus", "missing.txt"], "missing.txt: no such file"),
    (["train", "--corpus", "moby-dick"], "unknown corpus 'moby-dick'"),
    (["train", "--lr", "-1"], "--lr must be > 0, got -1"),
    (["train", "--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["generate", "no-such-run"], "no-such-run: no such run folder"),
    (["evaluate", "."], "not a charlm run folder (no config.json)"),
])
def test_user_errors_print_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("charlm: error: ") and message in err and "\n" not in err


def test_a_corpus_shorter_than_one_batch_exits_2(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    assert main(["train", "--corpus", str(short), "--out", str(tmp_path / "r")]) == 2
    # the auto recipe's smallest batch: it shrinks the batch for a small text as far as it can
    assert "too short for one batch of batch_size=8 x num_steps=32" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["train", "--cell", "transformer"], ["resume"], ["frobnicate"]])
def test_argument_errors_exit_2(argv):
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    assert code == 2


@pytest.mark.slow
def test_python_dash_m_and_help_work(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "charlm", "train", "--help"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0
    assert "--num-steps INT" in done.stdout and "BPTT length in tokens (default: 35)" in done.stdout


def test_corpora_lists_every_name(capsys):
    assert main(["corpora"]) == 0
    out = capsys.readouterr().out
    for name in ("timemachine", "war-of-the-worlds", "jaychou-lyrics", "tinyshakespeare", "ptb"):
        assert name in out


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_checkpoint_and_resume_finishes_the_run(book, tmp_path, signum, code):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "charlm", "train", "--corpus", str(book), "--out", str(run), *TINY,
            "--epochs", "100000", "--save-every", "0", "--eval-every", "0", "--sample-every", "0"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (run / "metrics.jsonl").is_file():
        time.sleep(0.1)
    time.sleep(0.5)  # some epochs and part of one more
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "checkpoint saved in" in err and f"continue it with: charlm resume {run}" in err
    saved = load_trainer(run / "trainer.pt")
    assert saved["epoch"] >= 1
    assert main(["resume", str(run), "--epochs", str(saved["epoch"] + 2)]) == 0
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, saved["epoch"] + 3))


def test_evaluate_on_another_text_uses_the_runs_cleaning_and_vocabulary(book, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--corpus", str(book), "--out", str(run), *TINY]) == 0
    other = tmp_path / "other.txt"
    other.write_text("The Time-Traveller, for so it WILL be convenient!\n" * 3)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--corpus", str(other), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[0])
    # d2l cleaning of the run: letters and spaces only, lower case; lines joined with no separator
    assert report["num_tokens"] == len("the time traveller for so it will be convenient") * 3 - 1


def test_every_recipe_loads_into_a_valid_configuration():
    names = recipe_names()
    assert {"rnn-scratch", "rnn-scratch-random", "gru-concise", "lstm-scratch",
            "rnn-jaychou-random"} <= set(names)
    for name in names:
        assert from_recipe(name).epochs >= 1
    assert from_recipe("rnn-jaychou-random", epochs=3).to_dict() | {"epochs": 250} == \
        from_recipe("rnn-jaychou-random").to_dict()  # a flag overrides the recipe


@pytest.mark.slow
@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_trains_and_its_loss_falls(recipe, tmp_path, data_dir):
    # A smoke run of the real setup on the real corpus: 3 epochs of at most 30,000 tokens, a smaller model.
    assert main(["train", "--recipe", recipe, "--epochs", "3", "--out", str(tmp_path / "r"),
                 "--num-hiddens", "32", "--device", "cpu", "--sample-every", "0", "--max-tokens", "30000",
                 "-q"]) == 0
    config = to_flat(run_configs(tmp_path / "r")[1])
    assert config["num_hiddens"] == 32 and config["epochs"] == 3
    # the recipe's settings, with those for the precision this machine trains in (fp32 without bf16)
    settings = {**load_recipe(recipe)["settings"], **for_precision(load_recipe(recipe), {"device": "cpu"})}
    overridden = ("num_hiddens", "epochs", "sample_every", "max_tokens", "device")
    assert all(config[k] == v for k, v in settings.items() if k not in overridden)
    losses = train_losses(tmp_path / "r")
    assert losses[-1] < losses[0]


def test_an_unknown_recipe_is_a_one_line_error(capsys):
    assert main(["train", "--recipe", "nope"]) == 2
    assert "--recipe 'nope' does not exist; choose one of" in capsys.readouterr().err


# -- machines of other kinds, simulated: the precision and device choices end to end --------------

def _simulate(monkeypatch, **facts):
    """This machine as charlm's probe would describe another kind (an AVX2-only CPU, no GPU, ...)."""
    from charlm.hardware import machine

    simulated = machine.replace(machine.probe(), **facts)
    monkeypatch.setattr(machine, "probe", lambda: simulated)
    return simulated


AVX2_ONLY = {"cpu_model": "AMD EPYC 7B13 (simulated)", "cpu_features": frozenset({"avx2", "fma", "bmi2"}),
             "onednn_bf16": False}
AUTO_RECIPES = [name for name in recipe_names() if load_recipe(name)["settings"].get("precision") == "auto"]


def test_no_recipe_hard_codes_bf16():
    assert AUTO_RECIPES and all("bf16" not in load_recipe(name)["settings"] for name in recipe_names())


@pytest.mark.slow
@pytest.mark.parametrize("recipe", AUTO_RECIPES)
def test_the_quality_recipes_train_in_fp32_on_a_cpu_without_bf16(recipe, tmp_path, data_dir, monkeypatch,
                                                                   caplog):
    _simulate(monkeypatch, **AVX2_ONLY)
    caplog.set_level("INFO", logger="charlm")
    assert main(["train", "--recipe", recipe, "--epochs", "3", "--out", str(tmp_path / "r"),
                 "--device", "cpu",
                 "--num-hiddens", "32", "--sample-every", "0", "--max-tokens", "30000", "--batch-size", "8",
                 "--warmup-steps", "5"]) == 0
    assert "precision fp32: this CPU (AMD EPYC 7B13 (simulated), no AVX-512 BF16 / AMX) has no bf16 " \
           "hardware" in caplog.text
    losses = train_losses(tmp_path / "r")
    assert losses[-1] < losses[0]


def test_auto_precision_trains_in_bf16_where_the_cpu_has_it(book, tmp_path, monkeypatch, caplog):
    _simulate(monkeypatch, cpu_features=frozenset({"avx512f", "avx512_bf16", "amx_bf16"}), onednn_bf16=True)
    seen = []
    import torch

    real = torch.autocast

    def spy(device_type, dtype=None, enabled=True, **kw):
        seen.append(enabled)
        return real(device_type, dtype, enabled=False, **kw)  # bf16 needs the real hardware: record only

    monkeypatch.setattr(torch, "autocast", spy)
    caplog.set_level("INFO", logger="charlm")
    assert main(["train", "--corpus", str(book), "--out", str(tmp_path / "r"), *TINY]) == 0
    assert "precision bf16: this CPU computes bf16 products in hardware" in caplog.text
    assert seen and all(seen)
    assert run_configs(tmp_path / "r")[1].precision == "auto"


def test_bf16_on_a_cpu_without_it_is_one_line_and_exit_2(book, tmp_path, monkeypatch, capsys):
    _simulate(monkeypatch, **AVX2_ONLY)
    for flag in (["--precision", "bf16"], ["--bf16"]):
        assert main(["train", "--corpus", str(book), "--out", str(tmp_path / "r"), *TINY, *flag]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert err.startswith("charlm: error: --precision bf16: this CPU (AMD EPYC 7B13 (simulated), "
                              "no AVX-512 BF16 / AMX) cannot run bf16")


@pytest.mark.parametrize("recipe", ["shakespeare-gpu", "ptb-char-gpu"])
def test_a_gpu_recipe_without_a_gpu_says_so_in_one_line(recipe, monkeypatch, capsys, tmp_path):
    _simulate(monkeypatch, cuda=None, cuda_bf16=False)
    assert main(["train", "--recipe", recipe, "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"charlm: error: recipe {recipe} needs a CUDA device; none was found " \
                                      "(--device cpu runs it on the CPU, far slower)\n"


def test_a_run_saved_with_the_old_bf16_switch_resumes_in_its_own_precision():
    old = from_recipe().to_dict()
    del old["precision"]
    assert from_recipe().from_dict({**old, "bf16": True}).precision == "bf16"
    assert from_recipe().from_dict({**old, "bf16": False}).precision == "fp32"


@pytest.mark.slow
def test_with_onednn_held_to_avx2_the_cpu_recipe_trains_in_fp32_and_bf16_is_refused(tmp_path, data_dir):
    # ONEDNN_MAX_CPU_ISA=AVX2 makes oneDNN act as on an AVX2-only CPU (the Zen 3 where a bf16 recipe
    # died inside oneDNN), whatever this CPU is: the real library, not a simulated probe.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "ONEDNN_MAX_CPU_ISA": "AVX2",
           "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    base = [sys.executable, "-m", "charlm", "train", "--recipe", "shakespeare-cpu-10min", "--epochs", "1",
            "--num-hiddens", "32", "--max-tokens", "20000", "--sample-every", "0"]
    done = subprocess.run([*base, "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "precision fp32: " in done.stderr and "Traceback" not in done.stderr
    refused = subprocess.run([*base, "--out", str(tmp_path / "s"), "--precision", "bf16"],
                             capture_output=True,
                             text=True, env=env, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.startswith("charlm: error: ") and refused.stderr.count("\n") == 1
    assert "--precision bf16: " in refused.stderr
    assert "cannot run bf16" in refused.stderr or "refuses bf16" in refused.stderr


@pytest.mark.slow
def test_info_shows_the_machine_and_the_choices_training_makes(capsys):
    from charlm.hardware import machine

    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    facts = machine.probe()
    assert data["machine"]["cpu"] == facts.describe_cpu()
    assert data["choices"]["precision"]["value"] == machine.choose_precision("auto", facts, "cpu").value
    assert data["choices"]["kernel target"]["value"] == machine.kernel_target(facts).value
    assert all(choice["reason"] for choice in data["choices"].values())
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("machine\n") and "\nchoices (auto)\n" in text and "  precision " in text


def test_info_on_an_avx2_laptop_without_a_compiler_says_what_charlm_does_there(monkeypatch, capsys):
    from charlm.models import native

    _simulate(monkeypatch, **AVX2_ONLY, compiler=None, cores=4)
    monkeypatch.setattr(native, "build_status", lambda: native.KernelStatus(False, None, "no C++ compiler"))
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    choices = data["choices"]
    assert choices["precision"]["value"] == "fp32" and "no bf16 hardware" in choices["precision"]["reason"]
    assert choices["kernel target"]["value"] == "x86-64-v3"
    assert choices["scratch models"] == {"value": "Python loops", "reason": "the C++ kernels are not "
                                         "available: no C++ compiler"}
    assert choices["threads"]["value"] == "4"
    assert data["machine"]["compiler"].startswith("none found")


def test_a_budgeted_recipe_takes_the_settings_for_the_precision_this_machine_trains_in(monkeypatch):
    recipe = load_recipe("shakespeare-cpu-10min")
    fp32 = recipe["by_precision"]["fp32"]
    _simulate(monkeypatch, **AVX2_ONLY)
    config = from_recipe("shakespeare-cpu-10min")
    assert all(to_flat(config)[k] == v for k, v in fp32.items())
    assert from_recipe("shakespeare-cpu-10min", num_hiddens=64).model.num_hiddens == 64  # a flag still wins
    _simulate(monkeypatch, cpu_features=frozenset({"avx512f", "amx_bf16"}), onednn_bf16=True)
    bf16 = from_recipe("shakespeare-cpu-10min")
    assert all(to_flat(bf16)[k] == v for k, v in recipe["settings"].items() if k in fp32)
    assert from_recipe("shakespeare-cpu-10min", precision="fp32").model.num_hiddens == \
        fp32.get("num_hiddens", 512)


def test_recipes_lists_the_settings_a_recipe_takes_in_fp32(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "in fp32: --dropout 0.2 --dropout-output 0.1 --num-hiddens 384 --num-steps 64" in out


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_on_a_cuda_gpu_auto_precision_trains_under_bf16_autocast_where_the_gpu_has_it(book, tmp_path, caplog):
    import torch

    caplog.set_level("INFO", logger="charlm")
    tiny = [a if a != "cpu" else "cuda" for a in TINY]
    assert main(["train", "--corpus", str(book), "--out", str(tmp_path / "r"), *tiny, "--cell", "lstm",
                 "--impl", "builtin"]) == 0
    native = torch.cuda.get_device_capability(0) >= (8, 0)
    assert f"precision {'bf16' if native else 'fp32'}: " in caplog.text
    losses = train_losses(tmp_path / "r")
    assert losses[-1] < losses[0]


# -- the first hour: notes, suggestions, and what a run leaves out -------------------------------

@pytest.mark.parametrize("argv, suggestion", [
    (["trian"], "(did you mean train?)"),
    (["train", "--recipe", "lstm-consice"], "(did you mean lstm-concise?)"),
    (["train", "--corpus", "tinyshakspeare"], "(did you mean tinyshakespeare?)"),
    (["train", "--cell", "lsmt"], "(did you mean lstm?)"),
])
def test_a_misspelled_name_suggests_the_closest_one(argv, suggestion, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and suggestion in err


def test_a_prefix_with_unseen_characters_gives_one_plain_note_before_the_text(book, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--corpus", str(book), "--out", str(run), *TINY, "-q"]) == 0
    capsys.readouterr()
    assert main(["generate", str(run), "--prefix", "Time #", "--num-preds", "5", "--seed", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("Time #") and "note" not in captured.out
    notes = [line for line in captured.err.splitlines() if "note" in line or "Warning" in line]
    assert notes == ["charlm: note: prefix tokens not in the vocabulary, read as <unk>: 'T', '#'"]
    assert ".py:" not in captured.err


def test_generate_and_evaluate_use_the_best_validation_weights_and_say_so(book, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--corpus", str(book), "--out", str(run), *TINY, "-q"]) == 0
    capsys.readouterr()
    scores = {}
    for which in ([], ["--which", "best"], ["--which", "last"]):
        assert main(["evaluate", str(run), *which, "--json"]) == 0
        report = json.loads(capsys.readouterr().out.splitlines()[0])
        scores[tuple(which)] = report["loss"]
        used = "model.safetensors" if which[-1:] == ["last"] else "best.safetensors"
        assert report["data"].endswith(f"with {used}")
    assert scores[()] == scores[("--which", "best")]
    assert main(["generate", str(run), "--prefix", "the", "--num-preds", "3"]) == 0
    assert "weights: best.safetensors (the best validation loss)" in capsys.readouterr().err
    (run / "best.safetensors").unlink()  # a run that kept no best weights: the last ones, said so
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["data"].endswith("with model.safetensors")


def test_a_run_that_leaves_most_of_its_text_unused_says_so(book, tmp_path, caplog):
    from charlm.data.dataset import load_splits

    caplog.set_level("INFO", logger="charlm")
    argv = ["train", "--corpus", str(book), "--out", str(tmp_path / "r"), *TINY, "--max-tokens", "500"]
    assert main(argv) == 0
    total = load_splits(book).train.numel()
    assert f"using the first 500 of {total:,} training characters (--max-tokens -1 for all)" in caplog.text


def test_generate_writes_to_a_file_and_stops_at_a_text_given_with_escapes(book, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--corpus", str(book), "--out", str(run), *TINY, "-q"]) == 0
    out = tmp_path / "samples.txt"
    argv = ["generate", str(run), "--prefix", "the", "--num-preds", "300", "--num-samples", "2",
            "--seed", "1", "--stop", "e", "--out", str(out)]
    capsys.readouterr()
    assert main(argv) == 0 and capsys.readouterr().out == ""
    samples = out.read_text(encoding="utf-8").rstrip("\n").split("\n\n")
    assert len(samples) == 2 and all(s.startswith("the") for s in samples)
    assert all(s.endswith("e") or len(s) == 303 for s in samples) and any(len(s) < 303 for s in samples)
    assert build_parser().parse_args(["generate", "r", "--stop", "\\n\\t"]).stop == "\n\t"
    assert main(argv) == 2  # the file is there now: never overwritten without --force
    assert "already exists (use --force to overwrite)" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0

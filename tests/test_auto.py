"""The auto recipe (auto.py): `charlm train PATH` chooses the model for the text, the machine and the
time budget by small rules, says what it chose in one line, and yields to every flag given."""

import pytest
import torch

from charlm import RNNLM, ModelConfig, TrainConfig, load
from charlm.checkpoint import trained_tokens
from charlm.cli import main
from charlm.config import default_recipe
from charlm.hardware import machine
from charlm.training import auto


def flops_machine(gflops: float):
    """A machine that trains at `gflops` billion FLOP/s whatever the model: ~6 FLOPs per parameter
    per token (forward and backward), so tokens/s = FLOP/s / (6 x parameters)."""
    return lambda config: gflops * 1e9 / (6 * auto.num_params(config.model))


def chosen_params(choice: auto.AutoChoice) -> int:
    return choice.params


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers, embedding", [(1, 64), (2, 64), (3, None)])
def test_num_params_counts_every_parameter_of_the_model(cell, layers, embedding):
    config = ModelConfig(vocab_size=71, num_hiddens=40, cell=cell, impl="builtin", num_layers=layers,
                         embedding=embedding)
    assert auto.num_params(config) == sum(p.numel() for p in RNNLM(config).parameters())


def test_a_faster_machine_or_a_longer_budget_buys_a_larger_model():
    big_text = 50_000_000  # so large that only compute bounds the model
    sizes = [chosen_params(auto.choose(big_text, 80, minutes, flops_machine(gflops)))
             for gflops, minutes in ((50, 10), (200, 10), (200, 60), (20_000, 10))]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_the_model_is_the_largest_that_gets_the_tokens_per_parameter_it_needs():
    chars, machine = 50_000_000, flops_machine(200)
    choice = auto.choose(chars, 80, 10, machine)
    seconds = 60 * 10 * auto.TRAINING_SHARE
    assert auto.enough_tokens(choice.tokens_per_sec * seconds, choice.params, chars)
    width, depth = choice.settings["num_hiddens"], choice.settings["num_layers"]
    up = auto.LADDER[auto.LADDER.index((width, depth)) + 1]  # the next candidate up did not get them
    bigger = TrainConfig.of(**{**auto.BASE, "num_hiddens": up[0], "num_layers": up[1], "vocab_size": 80})
    assert not auto.enough_tokens(machine(bigger) * seconds, auto.num_params(bigger.model), chars)


def test_a_text_read_many_times_needs_fewer_tokens_per_parameter_than_one_read_once():
    # 20 per parameter for one pass; a fourth of that for 16 passes
    params = 1_000_000
    assert auto.enough_tokens(20e6, params, 20e6) and not auto.enough_tokens(19e6, params, 19e6)
    assert auto.enough_tokens(5e6, params, 5e6 / 16) and not auto.enough_tokens(4.9e6, params, 4.9e6 / 16)


def test_a_small_text_keeps_a_fast_machine_from_choosing_a_model_that_would_memorise_it():
    gpu = flops_machine(100_000)
    small, large = auto.choose(100_000, 80, 10, gpu), auto.choose(20_000_000, 80, 10, gpu)
    assert small.params <= auto.PARAMS_PER_CHAR * 100_000 < large.params


def test_dropout_rises_with_the_passes_over_the_text_and_is_capped():
    rates = [auto.dropout_for(e) for e in (0.5, 1, auto.FREE_PASSES, 8, 64, 1e6)]
    assert rates[:3] == [0.0] * 3 and rates[3] > 0 and rates[-1] == auto.MAX_DROPOUT
    assert rates == sorted(rates)
    machine = flops_machine(200)
    small, large = auto.choose(100_000, 80, 10, machine), auto.choose(5_000_000, 80, 10, machine)
    assert small.epochs > large.epochs and small.settings["dropout_output"] > large.settings["dropout_output"]


def test_settings_the_user_gives_are_kept_and_the_rest_chosen_around_them():
    given = {"num_hiddens": 1024, "dropout_output": 0.05, "batch_size": 16}
    seen = []

    def machine(config):
        seen.append((config.model.num_hiddens, config.batch_size))
        return flops_machine(200)(config)

    choice = auto.choose(1_000_000, 80, 10, machine, given)
    assert not set(given) & set(choice.settings)  # nothing the user gave is chosen again
    assert {w for w, _ in seen} == {1024} and {b for _, b in seen} == {16}  # measured as they will run
    assert "num_layers" in choice.settings and "dropout" in choice.settings


def test_without_a_time_budget_the_epochs_given_are_the_budget():
    fast = auto.choose(1_000_000, 80, 0, flops_machine(1), {"epochs": 3, "max_minutes": 0})
    assert fast.epochs == 3  # the speed does not matter: no clock runs
    assert fast.params <= auto.PARAMS_PER_CHAR * 1_000_000


@pytest.mark.slow
def test_the_speed_is_measured_on_the_model_itself():
    def config(width):
        return TrainConfig.of(**{**auto.BASE, "num_hiddens": width, "num_layers": 1, "vocab_size": 30,
                                 "batch_size": 4, "num_steps": 16, "embedding": 8})
    small, large = (auto.measure_speed(config(w), torch.device("cpu"), "fp32") for w in (8, 768))
    assert small > 3 * large > 0


def test_the_line_says_what_was_chosen_and_for_what():
    config = TrainConfig.of(**{**auto.BASE, "num_hiddens": 512, "num_layers": 2, "dropout": 0.3,
                               "dropout_output": 0.3, "vocab_size": 65})
    choice = auto.AutoChoice({}, 1_003_854, 65, 12_000.0, 12.3, 3_322_177, "cpu", "bf16")
    line = auto.describe(choice, config)
    for part in ("auto: a new 2 x 512 LSTM", "embedding 64", "dropout 0.3", "batch 32 x 128", "AdamW 0.003",
                 "cosine over 10 min", "about 12 passes", "1,003,854 characters", "65 distinct",
                 f"{machine.probe().cores} CPU cores", "kernels, bf16"):
        assert part in line, part


def test_a_text_file_gets_the_auto_recipe_and_everything_else_the_books(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("some text\n" * 100)
    assert default_recipe({"corpus": str(book)}) == "auto"
    assert default_recipe({"corpus": "timemachine"}) == "book"
    assert default_recipe({}) == "book"
    assert default_recipe({"corpus": str(book), "init_from": "runs/x"}) == "book"  # inherits the run's


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "poems.txt"
    path.write_text("the sea is calm tonight, the tide is full, the moon lies fair\n" * 120, encoding="utf-8")
    return path


@pytest.mark.slow
def test_train_path_alone_prints_its_choice_and_trains_it(text, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", str(text), "--out", str(run), "--max-minutes", "0.05", "--device", "cpu",
                 "-q"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("auto: ") and "LSTM" in line and "over 0.05 min" in line
    config = load(run).config
    assert (config.model.cell, config.clean, config.max_tokens) == ("lstm", "raw", -1)
    assert f"{config.model.num_layers} x {config.model.num_hiddens} LSTM" in line


def test_recipe_book_gives_a_text_file_the_books_setup(text, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--corpus", str(text), "--recipe", "book", "--out", str(run), "--epochs", "1",
                 "--num-hiddens", "8", "--batch-size", "2", "--num-steps", "4", "--device", "cpu",
                 "-q"]) == 0
    assert "auto:" not in capsys.readouterr().out
    config = load(run).config
    assert (config.model.cell, config.clean) == ("rnn", "d2l")


def test_the_text_is_given_once(text, tmp_path, capsys):
    assert main(["train", str(text), "--corpus", "timemachine", "--out", str(tmp_path / "r")]) == 2
    assert "give the text once" in capsys.readouterr().err


@pytest.mark.slow
def test_a_windows_1252_book_trains_evaluates_and_generates_with_no_flag_but_the_path(tmp_path, capsys):
    book = tmp_path / "book.txt"
    text = "\u201cWell,\u201d said the Time Traveller \u2014 and he smiled. " * 300
    book.write_bytes(text.encode("cp1252"))  # curly quotes 0x93/0x94, a dash 0x97: not UTF-8
    run = tmp_path / "run"
    # (--out and --max-minutes only keep the test short and in tmp_path)
    assert main(["train", str(book), "--out", str(run), "--max-minutes", "0.05", "-q"]) == 0
    assert main(["evaluate", str(run), "--json"]) == 0
    assert main(["generate", str(run), "--num-preds", "20"]) == 0
    out = capsys.readouterr().out
    assert "\u201c" in load(run).vocab.token_to_idx and load(run).config.encoding == "cp1252"
    assert '"bits_per_character"' in out


def test_the_line_names_a_gpu_when_the_speeds_were_measured_on_one(monkeypatch):
    # no GPU here: the machine is simulated, as tests/test_machine.py does for every hardware branch
    monkeypatch.setattr(machine, "probe", lambda: machine.Machine(cuda="NVIDIA H200", cuda_bf16=True))
    config = TrainConfig.of(**{**auto.BASE, "num_hiddens": 1536, "num_layers": 2, "vocab_size": 65})
    choice = auto.AutoChoice({}, 1_003_854, 65, 9e5, 300.0, 40_000_000, "cuda", "bf16")
    line = auto.describe(choice, config)
    assert line.endswith("on NVIDIA H200, cuDNN, bf16") and "CPU" not in line


def test_the_auto_recipe_reads_the_text_once_and_training_takes_it_on(tmp_path, monkeypatch):
    from charlm.training import loop

    (tmp_path / "book.txt").write_text("the time traveller for so it will be convenient to speak\n" * 400)
    reads, read = [], loop.load_splits
    monkeypatch.setattr(loop, "load_splits", lambda *a, **k: reads.append(a) or read(*a, **k))
    assert main(["train", str(tmp_path / "book.txt"), "--max-minutes", "0.02", "--out", str(tmp_path / "r"),
                 "--device", "cpu", "--from-scratch", "-q"]) == 0
    assert len(reads) == 1  # a 1 GB text took 47 s a read on two cores


# Rule 7: where a run starts.

@pytest.fixture(scope="module")
def english():
    return load("english")


ENGLISH_COUNTS = {c: 100 for c in "the sea is calm tonight,\n"}


def IN_ENGLISH(model):  # the English model's bits per character on a text in English
    return 1.9


def test_an_english_text_starts_from_the_english_model(english):
    start = auto.choose_start({}, "char", ENGLISH_COUNTS, 1e6, english, reads=IN_ENGLISH)
    assert start.run == "english" and "100.0% of its characters" in start.why
    assert "read at 1.90 bits/char" in start.why


@pytest.mark.parametrize("given, token, why", [
    ({"from_scratch": True}, "char", "--from-scratch"),
    ({"num_hiddens": 256}, "char", "--num-hiddens asks for a model of that shape"),
    ({"cell": "gru"}, "char", "--cell asks"),
    ({}, "word", "word tokens"),
])
def test_a_new_model_when_the_user_asks_for_one_or_for_word_tokens(english, given, token, why):
    start = auto.choose_start(given, token, ENGLISH_COUNTS, 1e6, english, reads=IN_ENGLISH)
    assert start.run is None and why in start.why


def test_a_text_in_another_script_starts_from_nothing(english):
    lyrics = {**{chr(0x4E00 + k): 30 for k in range(100)}, " ": 500, "\n": 300}  # Chinese
    start = auto.choose_start({}, "char", lyrics, 1e6, english, reads=IN_ENGLISH)
    assert start.run is None and "are in the English model's alphabet" in start.why
    mostly = {**ENGLISH_COUNTS, "\u00e9": 20}  # a few accented letters change nothing
    assert auto.choose_start({}, "char", mostly, 1e6, english, reads=IN_ENGLISH).run == "english"


def test_a_text_in_another_language_of_the_latin_alphabet_starts_from_nothing(english):
    """German and Spanish share English's letters, but the English model reads them at 5.6 and 4.9
    bits/char, and they trained better from nothing on the grid (docs/auto.md)."""
    german = {**ENGLISH_COUNTS, "\u00fc": 30, "\u00df": 20}
    start = auto.choose_start({}, "char", german, 1e6, english, reads=lambda model: 5.6)
    assert start.run is None and "reads it at 5.6 bits/char" in start.why and "another language" in start.why
    verse = auto.choose_start({}, "char", ENGLISH_COUNTS, 1e6, english, reads=lambda model: 2.6)
    assert verse.run == "english"  # verse drama still reads as English, and fine-tuned better from it


def test_the_english_model_reads_a_text_only_when_nothing_else_has_decided(english):
    def never(model):
        raise AssertionError("read the text for nothing")
    lyrics = {chr(0x4E00 + k): 30 for k in range(100)}
    assert auto.choose_start({}, "char", lyrics, 1e6, english, reads=never).run is None
    asked = auto.choose_start({"from_scratch": True}, "char", ENGLISH_COUNTS, 1e6, english, reads=never)
    assert asked.run is None


ENGLISH_PROSE = (
    "The rain had stopped before dawn, and by the time the boat came round the point the whole bay "
    "lay still under a pale sky. My uncle stood at the tiller without a word. He had promised my "
    "mother that we would be home for supper, and I knew from the set of his mouth that he meant to "
    "keep that promise, whatever the tide might think of it. We passed the old mill, the church "
    "with its broken clock, and the long wall of the orchard where, as boys, we had stolen apples "
    "and been chased by a dog that was far more frightened of us than we were of him. ")
GERMAN_PROSE = (
    "Der Regen hatte vor der Morgend\u00e4mmerung aufgeh\u00f6rt, und als das Boot um die Landzunge "
    "bog, lag die ganze Bucht still unter einem blassen Himmel. Mein Onkel stand am Ruder und sagte "
    "kein Wort. Er hatte meiner Mutter versprochen, dass wir zum Abendessen zu Hause sein w\u00fcrden, "
    "und ich wusste an seinem Mund, dass er dieses Versprechen halten wollte, was auch immer die "
    "Flut davon hielt. Wir fuhren an der alten M\u00fchle vorbei, an der Kirche mit der kaputten Uhr "
    "und an der langen Mauer des Obstgartens, wo wir als Jungen \u00c4pfel gestohlen hatten. ")


def test_the_english_model_reads_english_below_the_bound_and_german_above_it(english):
    assert auto.english_bits(english, list(ENGLISH_PROSE)) < auto.MAX_READ_BITS
    assert auto.english_bits(english, list(GERMAN_PROSE)) > auto.MAX_READ_BITS


def test_symbols_the_english_model_lacks_do_not_make_english_another_language(english):
    """Every 20th character a snowman: 5 % of the text, within MIN_COVERAGE, each one an <unk> the
    model never learned to predict."""
    snowy = [c if k % 20 else "\u2603" for k, c in enumerate(ENGLISH_PROSE)]
    assert "\u2603" not in english.vocab.token_to_idx
    assert auto.english_bits(english, snowy) < auto.MAX_READ_BITS


def test_a_new_model_when_the_budget_and_the_text_teach_more_than_the_english_model_read(english):
    read = trained_tokens(english)
    assert read > 1_000_000  # its metrics say what it was trained on
    big_text = {"e": read, "t": read}
    # a GPU's hour
    assert auto.choose_start({}, "char", big_text, 2.1 * read, english,
                             reads=IN_ENGLISH).run is None
    # a CPU's minutes
    assert auto.choose_start({}, "char", big_text, 0.5 * read, english,
                             reads=IN_ENGLISH).run == "english"
    # however long the budget, a small text holds only a few passes' worth
    assert auto.choose_start({}, "char", ENGLISH_COUNTS, 1000 * read, english,
                             reads=IN_ENGLISH).run == "english"


def test_without_the_english_model_the_auto_recipe_trains_from_scratch(monkeypatch, tmp_path):
    from charlm import checkpoint

    monkeypatch.setattr(checkpoint, "run_folder", lambda run: tmp_path / "missing")
    assert isinstance(auto._english(), str)
    start = auto.choose_start({}, "char", ENGLISH_COUNTS, 1e6, auto._english(), reads=IN_ENGLISH)
    assert start.run is None and "could not be read" in start.why


@pytest.fixture
def small_book(tmp_path):
    path = tmp_path / "book.txt"
    # \u2603 often enough for a row of its own, \u2604 too rare for one
    line = "It was the best of times, it was the worst of times. \u2603\n"
    path.write_text("\u2604 " * 3 + line * 300, encoding="utf-8")  # the held-out part is the end
    return path


def test_a_small_english_text_fine_tunes_the_english_model_and_says_so(small_book, english, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", str(small_book), "--max-minutes", "0.02", "--out", str(run), "--device", "cpu",
                 "-q"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    shipped = english.model.config
    shape = f"{shipped.num_layers} x {shipped.num_hiddens} {shipped.cell.upper()}"
    assert line.startswith(f"auto: fine-tunes charlm's English model ({shape}") and "AdamW 0.001" in line
    trained = load(run)
    assert trained.config.init_from == "english" and trained.model.config.num_hiddens == 512
    vocab = trained.vocab.idx_to_token
    assert vocab[:len(english.vocab)] == english.vocab.idx_to_token  # every old row keeps its meaning
    assert "\u2603" in vocab[len(english.vocab):]  # 300 times: a row of its own
    assert "\u2604" not in vocab  # 3 times, fewer than NEW_ROW_MIN: <unk>
    assert auto.NEW_ROW_MIN > 3


def test_from_scratch_trains_a_new_model_and_says_why(small_book, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", str(small_book), "--max-minutes", "0.02", "--out", str(run), "--device", "cpu",
                 "--from-scratch", "-q"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("auto: a new ") and "(--from-scratch)" in line
    assert load(run).config.init_from is None and "\u2604" in load(run).vocab.token_to_idx


def test_from_scratch_and_init_from_contradict_each_other(small_book, tmp_path, capsys):
    assert main(["train", str(small_book), "--from-scratch", "--init-from", "english", "--recipe", "book",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--from-scratch and --init-from english" in capsys.readouterr().err

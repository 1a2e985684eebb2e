"""Every row of docs/errors.md is a test: bad input gets one line on stderr and exit code 2.

``CLI_ROWS`` runs each bad command line against a folder holding two tiny trained runs (a
character model and a word model) and the bad files; ``ELSEWHERE`` names the tests in other files
that cover the remaining rows (a 2 GB file, damaged checkpoints, interruption). The last test holds
the document and these tables to the same rows, so neither can drift from the other.
"""

# ruff: noqa: E501 - one row of the table per line reads like the document
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from charlm.cli import main
from charlm.compression import CompressSettings, compress
from charlm.compression.container import Header, pack, unpack

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
TEXT = "the time traveller for so it will be convenient to speak of him was expounding\n" * 20
TINY = ["--num-hiddens", "16", "--batch-size", "4", "--num-steps", "8", "--epochs", "1", "--max-tokens", "-1",
        "--device", "cpu", "-q"]

# id -> (command line, what the one-line error must say)
CLI_ROWS = {
    "text-missing": (["train", "--corpus", "missing.txt"], "missing.txt: no such file"),
    "text-folder": (["train", "--corpus", "folder"], "folder: is a folder, not a text file"),
    "text-empty": (["train", "--corpus", "empty.txt"], "empty.txt: the file is empty"),
    "text-whitespace": (["train", "--corpus", "blank.txt"], "blank.txt: the file holds only whitespace"),
    "text-empty-after-decoding": (["train", "bom.txt", "-q"],
                                  "bom.txt: no text after decoding (utf-8-sig): the file holds only a byte-order mark"),
    "text-binary": (["train", "--corpus", "binary.dat"], "binary.dat: looks like a binary file"),
    "text-not-utf8": (["train", "--corpus", "latin1.txt", "--encoding", "utf-8"], "latin1.txt: not valid utf-8 (byte 0xe9 at offset 3); pass the file's encoding with --encoding, or --errors replace"),
    "text-unknown-encoding": (["train", "--corpus", "book.txt", "--encoding", "klingon"], "--encoding klingon: unknown text encoding"),
    "text-undetectable": (["train", "--corpus", "mystery.txt"], "mystery.txt: cannot tell its text encoding (not UTF-8 at byte 1"),
    "text-errors-choice": (["train", "--corpus", "book.txt", "--errors", "ignore"], "--errors must be one of strict, replace, got 'ignore'"),
    "text-no-tokens": (["train", "--corpus", "digits.txt", "--clean", "d2l"],
                       "digits.txt: no tokens are left after 'd2l' cleaning"),
    "text-shorter-than-a-batch": (["train", "--corpus", "short.txt", "--out", "r"],
                                  "corpus of 8 tokens is too short for one batch of batch_size=8 x num_steps=32"),
    "option-zero-size": (["train", "--num-hiddens", "0"], "--num-hiddens must be an integer >= 1, got 0"),
    "option-negative-size": (["train", "--batch-size", "-3"], "--batch-size must be an integer >= 1, got -3"),
    "option-not-a-number": (["train", "--num-steps", "ten"], "argument --num-steps: invalid int value: 'ten'"),
    "option-num-steps-beyond-corpus": (["train", "--corpus", "book.txt", "--num-steps", "5000", "--out", "r"],
                                       "too short for one batch of batch_size=8 x num_steps=5000"),
    "auto-no-budget": (["train", "book.txt", "--max-minutes", "0"],
                       "--max-minutes 0 leaves the auto recipe no budget to choose a model for: give --epochs"),
    "auto-and-init-from": (["train", "book.txt", "--recipe", "auto", "--init-from", "charrun"],
                           "--recipe auto chooses a new model for the text, and --init-from keeps the run's"),
    "train-preamble-unknown": (["train", "--corpus", "book.txt", "--preamble", "@", *TINY], "--preamble '@': '@' is not in the vocabulary"),
    "train-text-twice": (["train", "book.txt", "--corpus", "timemachine"],
                         "PATH book.txt and --corpus timemachine: give the text once"),
    "option-learning-rate": (["train", "--lr", "0"], "--lr must be > 0, got 0.0"),
    "option-cadence-form": (["train", "--save-every", "5x"], "--save-every must be a number of epochs (50), of steps (2000steps), a duration (30s, 5m, 1.5h), or several joined by commas, got '5x'"),
    "option-cadence-zero": (["train", "--eval-every", "0steps"], "--eval-every: '0steps' must be more than 0 (a plain 0 means only at the end)"),
    "option-cadence-fraction": (["train", "--sample-every", "2.5steps"], "--sample-every: a count of epochs or steps is a whole number, got '2.5steps'"),
    "option-val-tokens": (["train", "--val-tokens", "0"], "--val-tokens must be -1 (all) or an integer >= 2, got 0"),
    "option-temperature": (["generate", "charrun", "--temperature", "-1"], "--temperature must be >= 0"),
    "option-top-p-zero": (["generate", "charrun", "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    "option-top-p-above-one": (["generate", "charrun", "--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    "option-unknown-cell": (["train", "--cell", "transformer"], "--cell must be one of rnn, gru, lstm"),
    "option-unknown-cleaning": (["train", "--clean", "fancy"], "--clean must be one of d2l, lower, lyrics"),
    "option-unknown-tokenizer": (["train", "--token", "bpe"], "--token must be one of char, word, got 'bpe'"),
    "option-unknown-corpus": (["train", "--corpus", "moby-dick"], "unknown corpus 'moby-dick'"),
    "option-unknown-precision": (["train", "--precision", "fp16"], "--precision must be one of auto, fp32, bf16, got 'fp16'"),
    "option-unknown-recipe": (["train", "--recipe", "nope"], "--recipe 'nope' does not exist"),
    "option-unknown-command": (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    "resume-not-a-run": (["resume", "folder"], "folder: not a charlm run folder (no config.json)"),
    "resume-missing": (["resume", "nowhere"], "nowhere: no such run folder"),
    "from-scratch-and-init-from": (["train", "--corpus", "book.txt", "--from-scratch", "--init-from", "charrun"],
                                   "--from-scratch and --init-from charrun: a run starts from a trained model or from nothing"),
    "option-extend-min-count": (["train", "--extend-min-count", "0"], "--extend-min-count must be >= 1, got 0"),
    "extend-vocab-alone": (["train", "--corpus", "book.txt", "--extend-vocab"], "--extend-vocab extends the vocabulary of the run given with --init-from"),
    "init-from-missing": (["train", "--corpus", "book.txt", "--init-from", "nowhere"], "nowhere: no such run folder"),
    "init-from-other-script": (["train", "--corpus", "zh.txt", "--init-from", "charrun", "--clean", "raw"],
                               "% of its characters are not in the vocabulary of charrun: it is written in a script the model never saw; train it from scratch, or give --extend-vocab"),
    "evaluate-other-script": (["evaluate", "--corpus", "zh.txt", "-q"],
                              "% of its characters are not in the vocabulary of english: it is written in a script the model never saw; train a run on it (charlm train zh.txt)"),
    "evaluate-nothing-to-score": (["evaluate"], "RUN or --corpus is needed: give a run to score on its own text, or --corpus FILE to score a text with charlm's English model"),
    "init-from-shape": (["train", "--corpus", "book.txt", "--init-from", "charrun", "--num-hiddens", "99"], "--num-hiddens 99: --init-from charrun has "),
    "init-from-vocabulary": (["train", "--corpus", "book.txt", "--init-from", "charrun", "--token", "word"], "--token word: --init-from charrun reads char tokens, and its vocabulary cannot read word tokens"),
    "out-holds-a-run": (["train", "--corpus", "book.txt", "--out", "charrun"], "--out charrun already holds a run"),
    "generate-beam-too-wide": (["generate", "charrun", "--beam", "500"], "--beam 500 is wider than the vocabulary ("),
    "generate-beam-and-sampling": (["generate", "charrun", "--beam", "4", "--temperature", "0.5"], "--temperature chooses how to sample; --beam searches for the likeliest text instead and draws nothing: give one or the other"),
    "generate-empty-stop": (["generate", "charrun", "--stop", ""], "--stop must not be empty: it would end every sample before it begins"),
    "generate-out-exists": (["generate", "charrun", "--out", "empty.txt"], "--out empty.txt: already exists (use --force to overwrite)"),
    "generate-empty-prefix": (["generate", "charrun", "--prefix", ""], "prefix must not be empty"),
    "generate-unknown-prefix": (["generate", "charrun", "--prefix", "XYZ#"],
                                "none of the prefix tokens are in the vocabulary ('X', 'Y', 'Z', '#')"),
    "generate-unknown-words": (["generate", "wordrun", "--prefix", "zebra quagga"],
                               "none of the prefix tokens are in the vocabulary ('zebra', 'quagga')"),
    "generate-strict-prefix": (["generate", "charrun", "--prefix", "th#", "--strict"],
                               "prefix tokens not in the vocabulary (strict=True): '#'"),
    "generate-not-a-run": (["generate", "folder"], "folder: not a charlm run folder (no config.json)"),
    "serve-not-a-run": (["serve", "folder", "--port", "0"], "folder: not a charlm run folder (no config.json)"),
    "serve-port-range": (["serve", "charrun", "--port", "99999"], "argument --port: must be a port number from 0 to 65535 (0: any free port), got '99999'"),
    "serve-host-name": (["serve", "charrun", "--host", "example.com", "--port", "0"], "--host example.com: give an IP address to listen on"),
    "files-config-newer": (["generate", "newer"], "format version 99"),
    "files-weights-truncated": (["generate", "truncated", "--which", "last"], "truncated/model.safetensors: damaged or not a safetensors file"),
    "files-weights-bit-flip": (["generate", "flipped", "--which", "last"], "flipped/model.safetensors: damaged: the tensors do not match the SHA-256"),
    "compress-missing-input": (["compress", "missing.txt", "o.chlm", "--online"], "missing.txt: No such file or directory"),
    "compress-two-modes": (["compress", "book.txt", "o.chlm", "--online", "--run", "charrun"], "--online and --run choose two different modes; give one"),
    "compress-network-with-run": (["compress", "book.txt", "o.chlm", "--run", "charrun", "--num-hiddens", "8"], "--num-hiddens shapes the online network; a --run brings its own"),
    "compress-mix-lr": (["compress", "book.txt", "o.chlm", "--mix-lr", "-1"], "--mix-lr must be in [0, 1), got -1.0"),
    "compress-output-exists": (["compress", "book.txt", "empty.txt", "--online"], "empty.txt: already exists (use --force to overwrite)"),
    "compress-same-file": (["compress", "book.txt", "book.txt", "--online", "--force"], "input and output are the same file"),
    "compress-bad-setting": (["compress", "book.txt", "o.chlm", "--online", "--lanes", "-1"], "--lanes must be an integer >= 0, got -1"),
    "compress-word-model": (["compress", "book.txt", "o.chlm", "--run", "wordrun"], "compression needs a character-level run"),
    "compress-start-shape": (["compress", "book.txt", "o.chlm", "--online", "--num-hiddens", "16", "--start", "english"], "--start english fits the default network only"),
    "compress-learn-online": (["compress", "book.txt", "o.chlm", "--online", "--learn", "top"], "--learn top applies to a trained run's network (--run); the online network learns whole"),
    "decompress-not-an-archive": (["decompress", "book.txt", "o.txt"], "not a charlm archive"),
    "decompress-truncated": (["decompress", "cut.chlm", "o.txt"], "the archive is cut short: "),
    "decompress-truncated-trailer": (["decompress", "cut-trailer.chlm", "o.txt"], "the archive is cut short (its trailer is incomplete)"),
    "decompress-corrupted": (["decompress", "flipped.chlm", "o.txt"], "the archive is damaged: its coded bytes fail their CRC-32"),
    "decompress-header-damaged": (["decompress", "header.chlm", "o.txt"], "the archive's header is damaged (CRC-32 mismatch)"),
    "decompress-frame-damaged": (["decompress", "frame.chlm", "o.txt"], "the archive is damaged: a frame's header fails its CRC-32"),
    "decompress-trailer-damaged": (["decompress", "trailer.chlm", "o.txt"], "the archive's trailer is damaged (CRC-32 mismatch)"),
    "decompress-newer-format": (["decompress", "newer.chlm", "o.txt"], "archive format version 6; this charlm reads versions 4 and 5"),
    "decompress-other-torch": (["decompress", "torch.chlm", "o.txt"], "the archive was made with torch '0.0.1'"),
    "decompress-wrong-model": (["decompress", "char.chlm", "o.txt", "--run", "otherrun"], "otherrun is not the model this archive was made with"),
    "decompress-needs-run": (["decompress", "char.chlm", "o.txt"], "this archive was made with a trained model: give it with --run RUN"),
    "decompress-other-start": (["decompress", "start.chlm", "o.txt"], "this archive starts from the byte model of English '0123456789abcdef', but this charlm ships"),
    "decompress-online-with-run": (["decompress", "online.chlm", "o.txt", "--run", "charrun"], "made in the online mode: it needs no --run"),
}

# id -> "tests/<module>.py::<test>": rows whose test needs more than a command line
ELSEWHERE = {
    "text-2gb": "tests/test_tokenstream.py::test_a_large_file_is_never_a_python_list_of_its_characters",
    "text-vocabulary-size": "tests/test_vocab.py::test_every_token_of_the_text_maps_to_an_index_and_back",
    "text-streamed-errors": "tests/test_tokenstream.py::test_streamed_files_get_the_same_errors_as_whole_ones",
    "files-weights-damaged": "tests/test_checkpoint.py::test_a_damaged_weights_file_is_an_error_naming_it",
    "files-vocab-mismatch": "tests/test_checkpoint.py::test_a_vocabulary_that_does_not_match_the_model_is_refused",
    "files-weights-mismatch": "tests/test_checkpoint.py::test_weights_that_do_not_fit_the_config_are_refused",
    "files-untrusted-pickle": "tests/test_checkpoint.py::test_trainer_state_never_unpickles_code",
    "files-corpus-sha1": "tests/test_corpora.py::test_sha1_mismatch_is_an_error_and_nothing_is_kept",
    "files-english-missing": "tests/test_english.py::test_a_missing_english_model_is_one_line_saying_to_reinstall",
    "files-english-damaged": "tests/test_english.py::test_damaged_english_weights_are_one_line_naming_the_file",
    "files-embedded-corpus": "tests/test_corpora.py::test_a_damaged_copy_inside_charlm_is_refused_like_a_bad_download",
    "signal-interrupt": "tests/test_cli.py::test_a_signal_saves_a_checkpoint_and_resume_finishes_the_run",
    "compress-start-damaged": "tests/test_compression.py::test_a_missing_or_damaged_byte_model_is_one_line_saying_to_reinstall",
    "compress-no-compiler": "tests/test_compression.py::test_without_a_c_compiler_compress_says_so_in_one_line",
    "decompress-unknown-network": "tests/test_compression.py::test_an_archive_that_names_no_network_was_made_in_torch_and_decodes_so",
    "hardware-bf16-absent": "tests/test_cli.py::test_bf16_on_a_cpu_without_it_is_one_line_and_exit_2",
    "hardware-recipe-needs-cuda": "tests/test_cli.py::test_a_gpu_recipe_without_a_gpu_says_so_in_one_line",
    "hardware-device-absent": "tests/test_machine.py::test_the_device_is_cuda_then_mps_then_cpu",
    "hardware-kernel-level": "tests/test_kernel_builds.py::test_forcing_a_level_the_cpu_lacks_is_an_error_naming_the_variable",
    "hardware-threads-setting": "tests/test_threads.py::test_charlm_threads_fixes_the_count_whatever_the_load",
    "hardware-no-cxx-compiler": "tests/test_kernel_builds.py::test_without_a_cxx_compiler_the_kernels_warn_once_and_the_python_loops_run",
    "serve-port-in-use": "tests/test_serve.py::test_a_port_in_use_is_one_line_naming_the_flag",
    "serve-foreign-host": "tests/test_serve.py::test_a_foreign_host_is_refused",
    "serve-foreign-origin": "tests/test_serve.py::test_a_post_from_another_origin_is_refused",
    "serve-body-too-large": "tests/test_serve.py::test_an_oversized_body_is_refused_unread",
    "serve-not-json": "tests/test_serve.py::test_a_body_that_is_not_json_is_refused",
    "serve-unknown-run": "tests/test_serve.py::test_an_unknown_run_is_not_found",
    "serve-path-tricks": "tests/test_serve.py::test_no_path_reaches_a_file_off_the_list",
    "serve-caps": "tests/test_serve.py::test_caps_on_text_and_generation_are_4xx",
    "serve-bad-settings": "tests/test_serve.py::test_bad_settings_are_400_with_the_reason",
    "serve-attribute-window": "tests/test_serve.py::test_attribution_asks_for_a_position_and_window_it_can_explain",
    "serve-clamp-unit": "tests/test_serve.py::test_a_unit_that_is_not_there_cannot_be_held",
    "export-format": "tests/test_export.py::test_what_cannot_be_exported_is_a_clear_error",
    "export-bidirectional": "tests/test_export.py::test_what_cannot_be_exported_is_a_clear_error",
    "export-book-gru": "tests/test_export.py::test_what_cannot_be_exported_is_a_clear_error",
    "export-no-onnx": "tests/test_export.py::test_without_the_onnx_package_onnx_export_says_what_to_install",
    "export-exists": "tests/test_export.py::test_charlm_export_writes_the_file_and_will_not_overwrite_one",
    "serve-bidirectional": "tests/test_serve.py::test_a_bidirectional_run_cannot_generate",
    "serve-busy": "tests/test_serve.py::test_past_a_full_queue_a_request_is_told_to_come_back",
    "serve-method": "tests/test_serve.py::test_other_methods_are_not_allowed",
    "serve-stopping": "tests/test_serve.py::test_a_gate_working_in_one_thread_runs_every_computation_there",
    "training-diverges": "tests/test_training.py::test_a_diverging_loss_stops_training_and_keeps_the_last_good_checkpoint",
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A working folder with every bad file and two tiny trained runs."""
    root = tmp_path_factory.mktemp("errors")
    (root / "folder").mkdir()
    (root / "book.txt").write_text(TEXT)
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.txt").write_text(" \n\t \n" * 10)
    (root / "bom.txt").write_bytes(b"\xef\xbb\xbf")
    (root / "binary.dat").write_bytes(bytes(range(256)) * 4)
    (root / "latin1.txt").write_bytes("café crème ".encode("latin-1") * 10)
    (root / "mystery.txt").write_bytes(b"A\x81B\x8d" * 50)  # bytes no candidate encoding reads as text
    (root / "digits.txt").write_text("1234 5678\n" * 10)
    (root / "short.txt").write_text("too short")
    (root / "zh.txt").write_text("\u4e0d\u80fd\u7b54\u5e94\u4f60\u5728\u6211\u5fc3\u4e2d\u7684\u4f4d\u7f6e\n" * 400)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main(["train", "--corpus", "book.txt", "--out", "charrun", *TINY]) == 0
        assert main(["train", "--corpus", "book.txt", "--out", "wordrun", "--token", "word",
                     "--clean", "lines", *TINY]) == 0
        assert main(["train", "--corpus", "book.txt", "--out", "otherrun", "--seed", "7", *TINY]) == 0
    _archives(root)
    for name in ("newer", "truncated", "flipped"):
        (root / name).mkdir()
        for f in (root / "charrun").iterdir():
            if f.is_file():
                (root / name / f.name).write_bytes(f.read_bytes())
    config = root / "newer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "version": 99}))
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    weights = root / "flipped" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0x10  # one bit of one weight
    weights.write_bytes(bytes(data))
    return root


def _archives(root: Path) -> None:
    """Good archives of both modes, and damaged ones made from them."""
    text = TEXT[:300].encode()
    settings = CompressSettings.of(num_hiddens=16, embedding=8, orders=(1, 2))
    online = compress(text, settings=settings)
    (root / "online.chlm").write_bytes(online)
    (root / "char.chlm").write_bytes(compress(text, run=root / "charrun", settings=CompressSettings.of(orders=(1, 2))))
    head, frames, trailer = unpack(online)
    # the archive's parts: header | frame head (17 bytes) | coded bytes | their CRC (4) | end (1) | trailer (28)
    data_at = len(pack(head, [], trailer)) - 29 + 17
    (root / "cut.chlm").write_bytes(online[:data_at + 5])
    (root / "cut-trailer.chlm").write_bytes(online[:-5])
    for name, at in (("flipped", data_at + 3), ("header", 40), ("frame", data_at - 10), ("trailer", -3)):
        damaged = bytearray(online)
        damaged[at] ^= 0x01  # one bit of the coded bytes, the settings, a frame's header, the trailer
        (root / f"{name}.chlm").write_bytes(bytes(damaged))
    newer = bytearray(online)
    newer[6] = 6  # the format version byte
    (root / "newer.chlm").write_bytes(bytes(newer))
    other = Header(head.mode, {**head.settings, "torch": "0.0.1"})
    (root / "torch.chlm").write_bytes(pack(other, frames, trailer))
    head, frames, trailer = unpack(compress(text, settings=CompressSettings.of(orders=(1, 2))))
    assert head.settings["settings"]["start"] == "english"
    other = Header(head.mode, {**head.settings, "start": "0123456789abcdef"})
    (root / "start.chlm").write_bytes(pack(other, frames, trailer))


@pytest.mark.slow
@pytest.mark.parametrize("row", list(CLI_ROWS))
def test_bad_input_is_one_line_on_stderr_and_exit_2(row, folder, monkeypatch, capsys):
    argv, message = CLI_ROWS[row]
    monkeypatch.chdir(folder)
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own errors exit from inside parse_args
        code = exit_info.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("charlm: error: ") and "\n" not in err and "Traceback" not in err, err
    assert message in err, err


def test_debug_shows_the_traceback_instead(folder, monkeypatch):
    monkeypatch.chdir(folder)
    with pytest.raises(ValueError, match="prefix must not be empty"):
        main(["--debug", "generate", "charrun", "--prefix", ""])


def _doc_rows() -> list[str]:
    return re.findall(r"^\| `([a-z0-9-]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.M)


def test_the_document_lists_exactly_the_tested_rows():
    rows = _doc_rows()
    assert len(rows) == len(set(rows)), "a row appears twice in docs/errors.md"
    assert sorted(rows) == sorted([*CLI_ROWS, *ELSEWHERE])


@pytest.mark.parametrize("row", list(ELSEWHERE))
def test_rows_tested_elsewhere_name_tests_that_exist(row):
    path, name = ELSEWHERE[row].split("::")
    module = importlib.import_module(Path(path).stem)
    assert callable(getattr(module, name, None)), f"{ELSEWHERE[row]} does not exist"

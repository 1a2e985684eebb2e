"""Which implementation of the recurrences runs when (docs/implementations.md).

The fast scratch form picks its path in one place, `fused.choose_path`, from the tensors it is about
to run on; these tests state that choice case by case. The cells act on the answer, and
tests/test_fused.py holds every path to the book's loop. The page's table names a test for every
path: the last tests check that those tests exist and that the page knows every path.
"""

import importlib
import re
from pathlib import Path

import pytest
import torch

import charlm
from charlm.implementations import IMPLEMENTATIONS, NOT_RECURRENCES
from charlm.models import native
from charlm.models.fused import FEW_STEPS, KERNELS, LSTM_STEPS, PYTHON_LOOPS, TORCH_LSTM, choose_path

DOC = Path(__file__).resolve().parents[1] / "docs" / "implementations.md"
VOCAB_SIZE, NUM_HIDDENS, BATCH = 11, 5, 3
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def _tensors(cell: str, dtype=torch.float32, device="cpu", state_dtype=None) -> list[torch.Tensor]:
    """What a one-layer cell on token ids hands `choose_path`: ``W_x`` (the source), the bias, the
    state (``H``, and ``C`` for the LSTM) and the hidden weights (two tensors for the GRU)."""
    G = GATES[cell] * NUM_HIDDENS
    state = [torch.zeros(BATCH, NUM_HIDDENS, dtype=state_dtype or dtype, device=device)
             for _ in range(2 if cell == "lstm" else 1)]
    hidden = [torch.zeros(NUM_HIDDENS, G, dtype=dtype, device=device)]
    if cell == "gru":  # the book's form: [W_hz | W_hr], then W_hh
        hidden = [torch.zeros(NUM_HIDDENS, 2 * NUM_HIDDENS, dtype=dtype, device=device),
                  torch.zeros(NUM_HIDDENS, NUM_HIDDENS, dtype=dtype, device=device)]
    W_x = torch.zeros(VOCAB_SIZE, G, dtype=dtype, device=device)
    return [W_x, torch.zeros(G, dtype=dtype, device=device), *state, *hidden]


def _path(cell: str, steps: int = 35, **options) -> str:
    return choose_path(cell, *_tensors(cell, **options), steps=steps)


@pytest.fixture
def kernels():
    if not native.available():
        pytest.fail("the C++ kernels did not build (see the warning); CI must exercise them")


@pytest.mark.parametrize("cell", GATES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_on_the_cpu_every_cell_runs_on_the_kernels_training_or_not(kernels, cell, dtype):
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            assert _path(cell, dtype=dtype) == _path(cell, steps=1, dtype=dtype) == KERNELS


def test_without_the_kernels_the_rnn_and_gru_loop_in_python_and_the_lstm_goes_by_steps_and_autograd():
    with native.use_kernels(False):
        for cell in ("rnn", "gru"):
            assert _path(cell) == _path(cell, steps=1) == PYTHON_LOOPS
            with torch.no_grad():
                assert _path(cell, steps=1) == PYTHON_LOOPS
        # Training: torch's fused LSTM whatever the length.
        assert _path("lstm") == _path("lstm", steps=1) == TORCH_LSTM
        with torch.no_grad():  # generation: a few steps loop here, where torch's set-up costs more
            assert _path("lstm", steps=1) == _path("lstm", steps=FEW_STEPS) == LSTM_STEPS
            assert _path("lstm", steps=FEW_STEPS + 1) == TORCH_LSTM


@pytest.mark.parametrize("cell", GATES)
def test_tensors_off_the_cpu_or_in_a_dtype_the_kernels_lack_take_the_other_paths(kernels, cell):
    fallback = TORCH_LSTM if cell == "lstm" else PYTHON_LOOPS
    assert _path(cell, device="meta") == fallback  # any device but the CPU, as a GPU
    assert _path(cell, dtype=torch.float16) == fallback
    assert _path(cell, dtype=torch.float64, state_dtype=torch.float32) == fallback  # no mixed dtypes


@pytest.mark.parametrize("cell", GATES)
def test_under_cpu_autocast_the_tensors_count_in_the_dtype_the_recurrence_receives(kernels, cell):
    # A state carried over from a bf16 batch meets float32 weights. Under autocast the recurrence
    # gets every floating tensor in bf16, float64 ones excepted (torch.amp.custom_fwd); without
    # autocast the dtypes stay as they are, and the mix cannot run on the kernels.
    fallback = TORCH_LSTM if cell == "lstm" else PYTHON_LOOPS
    assert _path(cell, state_dtype=torch.bfloat16) == fallback
    with torch.autocast("cpu", torch.bfloat16):
        assert _path(cell, state_dtype=torch.bfloat16) == KERNELS
        assert _path(cell, dtype=torch.float64) == KERNELS
        assert _path(cell, dtype=torch.float64, state_dtype=torch.float32) == fallback


# ---- the page ---------------------------------------------------------------------------------------

# `tests/test_x.py::test_name`, or `::test_name` for another test of the file named just before.
NAMED_TEST = re.compile(r"`(tests/test_\w+\.py)?::(test_\w+)`")


def _named_tests() -> list[str]:
    named, module = [], None
    for match in NAMED_TEST.finditer(DOC.read_text(encoding="utf-8")):
        module = match.group(1) or module
        assert module, f"::{match.group(2)} follows no test file on the page"
        named.append(f"{module}::{match.group(2)}")
    return named


def test_the_page_names_tests_that_exist():
    named = _named_tests()
    assert len(named) > 20
    for test in named:
        path, name = test.split("::")
        module = importlib.import_module(Path(path).stem)
        assert callable(getattr(module, name, None)), f"docs/implementations.md names {test}: no such test"


def test_the_page_shows_every_path_choose_path_returns():
    text = DOC.read_text(encoding="utf-8")
    for path in (KERNELS, PYTHON_LOOPS, LSTM_STEPS, TORCH_LSTM):
        assert f'"{path}"' in text


# ---- the map: the page against the list in code --------------------------------------------------

PACKAGE = Path(charlm.__file__).resolve().parent
ROW = re.compile(r"^\| (?!path \|)([^|]+?) \|", re.MULTILINE)


def _page_rows() -> list[tuple[str, str]]:
    """(name, whole line) of each row of the page's table, header and rule left out."""
    text = DOC.read_text(encoding="utf-8")
    return [(match.group(1), text[match.start():text.index("\n", match.start())])
            for match in ROW.finditer(text) if not match.group(1).startswith("---")]


REFERENCES_ROW = "the references in the tests"  # the last row: programs of the tests, not of charlm


def test_the_page_has_a_row_for_every_implementation_and_no_other():
    assert [name for name, _ in _page_rows()] == [i.name for i in IMPLEMENTATIONS] + [REFERENCES_ROW]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda i: i.name)
def test_each_implementation_is_held_by_tests_that_exist_and_that_its_row_names(implementation):
    row = dict(_page_rows())[implementation.name]
    assert implementation.tests
    for test in implementation.tests:
        path, name = test.split("::")
        module = importlib.import_module(Path(path).stem)
        assert callable(getattr(module, name, None)), f"{implementation.name}: no such test {test}"
        assert f"::{name}`" in row, f"the row of {implementation.name} does not name {test}"
    for code in implementation.code:
        assert (PACKAGE / code).is_file(), code


def test_no_native_source_runs_without_being_on_the_map():
    named = {code for i in IMPLEMENTATIONS for code in i.code} | set(NOT_RECURRENCES)
    sources = {str(p.relative_to(PACKAGE)) for ext in ("*.c", "*.cpp", "*.h") for p in PACKAGE.rglob(ext)}
    assert sources - named == set(), "native sources no entry of charlm.implementations names"

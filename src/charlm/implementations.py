"""Every program that computes a recurrence, where it lives, and the tests that hold it to a reference.

charlm computes the book's cells in several programs, for speed or for a place the others cannot
go (docs/implementations.md says when each runs). A new fast path is one more entry here: the tests
(tests/test_implementations.py) then hold the page to this list row by row, check that every test
named here exists, and fail for a C or C++ source of the package that no entry names, so a program
cannot run without being on the map.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Implementation:
    """One program: `name` is its row on docs/implementations.md; `code`, the package's files it is
    written in; `tests`, those that hold it to its reference (``tests/test_x.py::test_y``)."""

    name: str
    code: tuple[str, ...]
    tests: tuple[str, ...]


IMPLEMENTATIONS = (
    Implementation("the book's loop", ("models/scratch.py",), (
        "tests/test_fused.py::test_fast_scratch_matches_the_book_loop_in_values_and_gradients",
        "tests/test_fused.py::test_impl_book_is_the_step_by_step_loop")),
    Implementation("torch.nn", ("models/builtin.py", "models/regularize.py"), (
        "tests/test_models.py::test_scratch_equals_builtin_with_copied_weights",
        "tests/test_fused.py::test_fast_scratch_matches_torch_nn")),
    Implementation("the fused Python path", ("models/fused.py",), (
        "tests/test_fused.py::test_fast_scratch_matches_the_book_loop_in_values_and_gradients",
        "tests/test_fused.py::test_fast_scratch_without_autograd_matches_token_by_token")),
    Implementation("the C++ recurrences",
                   ("models/csrc/recurrences.cpp", "models/csrc/cells.h", "models/native.py"), (
        "tests/test_fused.py::test_the_scratch_models_run_on_the_kernels_forward_and_backward",
        "tests/test_kernel_builds.py::test_the_kernels_built_for_a_level_compute_what_the_python_loops_compute")),
    Implementation("the C++ greedy decoder", ("models/csrc/decoding.cpp", "models/decoding.py"), (
        "tests/test_decoding.py::test_the_kernel_loop_computes_the_models_logits_and_state",
        "tests/test_decoding.py::test_greedy_text_from_the_kernel_loop_matches_the_python_loop")),
    Implementation("the compression stepper", ("compression/model.py",), (
        "tests/test_compression.py::test_the_stepper_computes_what_the_torch_nn_model_computes",)),
    Implementation("net.c (in kernel.c)",
                   ("compression/net.c", "compression/kernel.c", "compression/exact.h",
                    "compression/cell.h"), (
        "tests/test_compression.py::test_the_network_in_c_computes_what_torch_computes",
        "tests/test_compression.py::test_the_network_in_c_learns_as_well_as_the_one_in_torch")),
    Implementation("deepnet.c (in kernel.c)", ("compression/deepnet.c", "compression/deepnet.py"), (
        "tests/test_compression.py::test_the_deep_network_in_c_computes_what_torch_computes",
        "tests/test_compression.py::test_the_c_path_codes_within_noise_of_the_torch_path")),
    Implementation("the LSTM's memory from its outputs", ("inspection/hidden.py",), (
        "tests/test_inspect.py::test_the_trace_ends_in_the_models_own_state_and_gives_its_logits",)),
)

# Native sources that compute no recurrence, so no entry names them: the compressor's bitwise stage,
# and the settings and state its experts share. (kernel.c, the symbol experts, mixers and coder, runs
# net.c and deepnet.c; exact.h gives both their exp and squash, so the net.c entry names the two.)
NOT_RECURRENCES = ("compression/bits.c", "compression/kernel.h")

"""The kernels are built for an instruction-set level, never for one exact CPU.

charlm's machines change from day to day (an AVX2-only Zen 3, an AVX-512 Zen 5, a Xeon with AMX, an
arm64 laptop) and may share one build cache. So both native builds, the C++ recurrences
(:mod:`charlm.models.native`) and the compressor's C (:mod:`charlm.compression.kernel`), are built
for x86-64-v4, x86-64-v3 or portable (:mod:`charlm.hardware.native_build` chooses), carry that level in their
names in one cache folder, and compute what the Python path computes whichever level they were built
for. Importing charlm builds nothing and reads no source.

Only one build of the C++ kernels can be loaded into a process (its operators would register twice),
so the tests that build another level run in a subprocess.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from charlm.compression import build, race
from charlm.hardware import machine, native_build
from charlm.hardware.machine import Machine, kernel_target, target_flags
from charlm.models import native

SRC = str(Path(__file__).resolve().parents[1] / "src")
AVX512 = frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi2"})
AVX2 = frozenset({"avx2", "fma", "bmi2"})
CROSS_CC, CROSS_CXX = "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++"  # apt: gcc/g++-aarch64-linux-gnu


def _runs_here(target: str) -> bool:
    cpu = machine.probe()
    needs = set(machine.X86_LEVELS.get(target, ()))
    return target == "portable" or (cpu.arch == "x86_64" and needs <= cpu.cpu_features)


# -- the choice of level -------------------------------------------------------------------------------

@pytest.mark.parametrize("cpu, expected", [
    (Machine(arch="x86_64", cpu_features=AVX512 | {"amx_bf16", "amx_tile"}), "x86-64-v4"),  # a Xeon with AMX
    (Machine(arch="x86_64", cpu_features=AVX2), "x86-64-v3"),  # Zen 3: AVX2, no AVX-512
    (Machine(arch="x86_64", cpu_features=frozenset({"fma"})), "portable"),  # before AVX2
    (Machine(arch="x86_64", cpu_features=AVX512 - {"avx512vl"}), "x86-64-v3"),  # v4 needs all five
    (Machine(arch="arm64", cpu_features=frozenset({"asimd", "bf16"})), "portable"),
], ids=["avx512-amx", "avx2-only", "no-avx2", "avx512-without-vl", "arm64"])
def test_the_kernels_are_built_for_the_highest_level_the_cpu_runs(cpu, expected):
    assert kernel_target(cpu).value == expected


def test_the_portable_build_passes_no_machine_flag_so_an_arm64_compiler_accepts_it():
    assert not [flag for flag in target_flags("portable") if flag.startswith("-m")]
    assert not [flag for flag in native.cflags("portable") if flag.startswith("-m")]
    assert not [flag for flag in build.FLAGS if flag.startswith("-m")]


def test_each_level_is_a_build_of_its_own_name_so_a_shared_cache_never_mixes_them():
    names = [native.extension_name(target) for target in native.TARGETS]
    assert len(set(names)) == len(names)
    assert all(target.replace("-", "_") in name for target, name in zip(native.TARGETS, names))
    assert "-march=x86-64-v3" in native.cflags("x86-64-v3")
    assert "-march=native" not in " ".join(native.cflags("x86-64-v4"))  # this CPU's exact model: no


def test_forcing_a_level_the_cpu_lacks_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setattr(machine, "probe", lambda: Machine(arch="x86_64", cpu_features=AVX2))
    monkeypatch.setenv("CHARLM_KERNELS_TARGET", "x86-64-v4")
    native._load.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"CHARLM_KERNELS_TARGET=x86-64-v4: this CPU .* cannot run it; "
                                             r"the highest level it runs is x86-64-v3"):
            native.available()
        status = native.build_status()  # for `charlm info`: says so, does not raise
        assert not status.built and "CHARLM_KERNELS_TARGET=x86-64-v4" in status.reason
        monkeypatch.setenv("CHARLM_KERNELS_TARGET", "avx512")
        with pytest.raises(ValueError, match="CHARLM_KERNELS_TARGET must be auto or one of portable, "
                                             "x86-64-v3, x86-64-v4, got 'avx512'"):
            native.available()
    finally:
        native._load.cache_clear()
        monkeypatch.undo()


def test_the_compression_kernel_refuses_a_level_the_cpu_lacks(monkeypatch):
    monkeypatch.setattr(machine, "probe", lambda: Machine(arch="x86_64", cpu_features=AVX2))
    with pytest.raises(ValueError, match="cannot run the x86-64-v4 kernel"):
        build.chosen("x86-64-v4", race.seconds)


def test_the_compression_kernel_is_built_for_the_level_charlm_kernels_target_names(monkeypatch):
    monkeypatch.setattr(machine, "probe", lambda: Machine(arch="x86_64", cpu_features=AVX512))
    monkeypatch.setenv("CHARLM_KERNELS_TARGET", "x86-64-v3")  # as CI's run held to AVX2 sets it
    assert build.chosen(None, race.seconds) == "x86-64-v3"
    monkeypatch.setenv("CHARLM_KERNELS_TARGET", "auto")  # auto: the race starts from the CPU's own level
    monkeypatch.setattr(build, "fastest", lambda level, seconds: machine.Choice(level, "measured the faster"))
    assert build.chosen(None, race.seconds) == "x86-64-v4"
    monkeypatch.setattr(machine, "probe", lambda: Machine(arch="x86_64", cpu_features=AVX2))
    monkeypatch.setenv("CHARLM_KERNELS_TARGET", "x86-64-v4")
    with pytest.raises(ValueError, match=r"CHARLM_KERNELS_TARGET=x86-64-v4: this CPU .* cannot run it"):
        race.library()
    target, why = race.status()  # for `charlm info`: says so, does not raise
    assert target == "x86-64-v3" and why.startswith("CHARLM_KERNELS_TARGET=x86-64-v4: this CPU")


# -- building and falling back -----------------------------------------------------------------------

def test_a_compiler_that_does_not_know_the_level_gets_the_portable_build(monkeypatch, caplog):
    built = []

    def build(target):
        built.append(target)
        if target != "portable":
            raise RuntimeError("Error building extension 'x': [1/3] c++ ...\n"
                               "cc1plus: error: bad value 'x86-64-v4' for '-march=' switch\n")

    monkeypatch.setattr(native, "_build", build)
    with caplog.at_level(logging.WARNING, logger="charlm.models.native"):
        status = native._build_with_fallback(machine.Choice("x86-64-v4", "the CPU has AVX-512"), forced=False)
    assert built == ["x86-64-v4", "portable"]
    assert status == native.KernelStatus(True, "portable", "the x86-64-v4 build failed: cc1plus: error: "
                                         "bad value 'x86-64-v4' for '-march=' switch")
    assert "building the portable ones" in caplog.text
    built.clear()
    with pytest.raises(RuntimeError):  # a level asked for by name is that level or nothing
        native._build_with_fallback(machine.Choice("x86-64-v4", "CHARLM_KERNELS_TARGET"), forced=True)
    assert built == ["x86-64-v4"]


@pytest.mark.slow
def test_a_c_compiler_that_does_not_know_the_level_gets_the_portable_compression_kernel(monkeypatch):
    compile_for_real = build.compile_to

    def old_compiler(path, flags):
        if any(flag.startswith("-march=") for flag in flags):
            raise build.KernelError("building the compression kernel with cc failed: cc1: error: bad value "
                                     "'x86-64-v4' for '-march=' switch")
        compile_for_real(path, flags)

    monkeypatch.setattr(build, "compile_to", old_compiler)
    build.build_for.cache_clear()
    try:
        target, path = build.build_for("x86-64-v4")
        assert target == "portable" and path.name == f"charlm_compression_portable_{build.kernel_id()}.so"
    finally:
        build.build_for.cache_clear()


@pytest.mark.slow
def test_the_build_message_appears_only_when_a_build_really_starts(monkeypatch, caplog):
    from torch.utils import cpp_extension

    loads = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: loads.append(kwargs))  # not the point here
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)  # the tests' shared folder: not this time
    name = native.extension_name("portable")
    folder = native_build.cache_folder() / name
    with caplog.at_level(logging.INFO, logger="charlm.models.native"):
        native._build("portable")
        assert "building charlm's C++ kernels for portable" in caplog.text
        assert loads[-1]["build_directory"] == str(folder)
        caplog.clear()
        (folder / f"{name}.so").write_bytes(b"")  # the cache holds the build: it only loads
        native._build("portable")
        assert caplog.text == ""
    with caplog.at_level(logging.INFO, logger="charlm.compression.build"):
        build.built("portable")  # this test's cache is empty: a real build, about a second
        assert "building charlm's compression kernel for portable" in caplog.text
        caplog.clear()
        build.built("portable")
        assert caplog.text == ""


@pytest.mark.slow
def test_both_native_builds_share_one_cache_folder_and_name_their_level(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    library = build.built("portable")
    cpp = native.build_folder(native.extension_name("x86-64-v3"))
    assert library.parent == cpp.parent == native_build.cache_folder()
    assert library.name.startswith("charlm_compression_portable_") and cpp.name.startswith(
        "charlm_kernels_x86_64_v3_")
    # TORCH_EXTENSIONS_DIR still puts the C++ build in torch's folder, as torch documents it.
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch"))
    assert native.build_folder("x") == tmp_path / "torch" / "x"


def test_switched_off_kernels_say_so_in_their_status(monkeypatch):
    monkeypatch.setenv("CHARLM_KERNELS", "0")
    native._load.cache_clear()
    try:
        assert native.build_status() == native.KernelStatus(False, None, "switched off (CHARLM_KERNELS=0)")
    finally:
        native._load.cache_clear()
        monkeypatch.undo()
    assert native.build_status().built


# -- every level computes what the Python loops compute ----------------------------------------------

# Run in a fresh process: build for one level, then hold the kernels to the Python loops.
_COMPARE = """
import os, torch
from charlm.models import RNNLM, ModelConfig, native
status = native.build_status()
assert status.built and status.target == os.environ["CHARLM_KERNELS_TARGET"], status
for cell in ("rnn", "gru", "lstm"):
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(11, 7, cell=cell, impl="scratch", num_layers=2)).double()
    X = torch.randint(11, (3, 6), generator=torch.Generator().manual_seed(1))
    results = []
    for kernels in (True, False):
        model.zero_grad()
        with native.use_kernels(kernels):
            logits, _ = model(X)
            (logits * torch.linspace(-1, 1, 11, dtype=torch.float64)).sum().backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1])
print("same as the Python loops on", status.target)
"""


@pytest.mark.slow
@pytest.mark.parametrize("target", ["x86-64-v3", "portable"])
def test_the_kernels_built_for_a_level_compute_what_the_python_loops_compute(target):
    if not _runs_here(target):
        pytest.skip(f"this CPU cannot run {target}")
    # CHARLM_KERNELS=1: a failed build is an error, not a silent pass on the Python loops. The
    # extension cache is the session's (tests/conftest.py): a new level is a build of ~20-60 s, once.
    env = {**os.environ, "PYTHONPATH": SRC, "CHARLM_KERNELS": "1", "CHARLM_KERNELS_TARGET": target}
    done = subprocess.run([sys.executable, "-c", _COMPARE], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"same as the Python loops on {target}"


# Run in a fresh process with no C++ compiler and an empty extension cache.
_NO_COMPILER = """
import warnings, torch
from charlm.models import RNNLM, ModelConfig, native
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert not native.available() and not native.available()
    model = RNNLM(ModelConfig(11, 7, cell="gru"))
    model(torch.randint(11, (3, 6)))[0].sum().backward()  # trains on the Python loops
print(len(caught), caught[0].message)
print(native.build_status())
"""


@pytest.mark.slow
def test_without_a_cxx_compiler_the_kernels_warn_once_and_the_python_loops_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "CXX": str(tmp_path / "no-such-c++"), "PATH": str(tmp_path),
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}
    env.pop("CHARLM_KERNELS", None)
    env.pop("CHARLM_KERNELS_TARGET", None)
    done = subprocess.run([sys.executable, "-c", _NO_COMPILER], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    warning, status = done.stdout.strip().splitlines()
    assert warning.startswith("1 charlm: C++ kernels unavailable, using the slower Python loops (no C++ "
                              "compiler:")
    assert status.startswith("KernelStatus(built=False, target=") and "install g++, or set CXX" in status


@pytest.mark.slow
def test_the_compression_kernel_status_names_its_level_and_file_or_why_not(monkeypatch, tmp_path):
    target, where = race.status()
    assert target == build.chosen(None, race.seconds) and Path(where).is_file()  # raced or asked for
    build.build_for.cache_clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))  # a cache without the build
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    try:
        target, why = race.status()  # for `charlm info`: no exception
        assert why.startswith("charlm's compressor builds a small C kernel once and needs a C compiler")
    finally:
        build.build_for.cache_clear()


# -- importing charlm reads no source ---------------------------------------------------------------

# Run in a fresh process: record every file opened (the audit hook sees builtins.open, io.open and
# os.open alike) while charlm is imported, then while the kernel's digest is computed.
_IMPORT = """
import sys
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
import charlm
from charlm.compression import build
sources = lambda: sorted({p.rsplit("/", 1)[-1] for p in opened if p.endswith((".c", ".cpp", ".h"))})
print(sources(), build.kernel_id.cache_info().currsize)
build.kernel_id()
print(sources())
"""


@pytest.mark.slow
def test_importing_charlm_reads_no_kernel_source_until_the_digest_is_asked_for():
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", _IMPORT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    at_import, after = done.stdout.strip().splitlines()
    assert at_import == "[] 0"  # nothing read, the digest not computed
    # seen once the digest is asked for:
    assert after == "['bits.c', 'cell.h', 'deepnet.c', 'exact.h', 'kernel.c', 'kernel.h', 'net.c']"


# -- the portable sources compile for arm64 ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not shutil.which(CROSS_CC), reason=f"no {CROSS_CC} (apt: gcc-aarch64-linux-gnu)")
def test_the_portable_compression_kernel_builds_for_arm64(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", CROSS_CC)
    library = tmp_path / "kernel.so"
    build.compile_to(library, build.FLAGS + target_flags("portable"))  # exactly the build charlm runs
    header = library.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which(CROSS_CXX), reason=f"no {CROSS_CXX} (apt: g++-aarch64-linux-gnu)")
def test_the_portable_cpp_kernels_compile_for_arm64():
    from torch.utils import cpp_extension

    # -fsyntax-only: the code and the flags are accepted; linking would need an arm64 libtorch.
    includes = [arg for path in cpp_extension.include_paths() for arg in ("-isystem", path)]
    for source in native.SOURCES:
        command = [CROSS_CXX, "-fsyntax-only", *native.cflags("portable"), *includes, str(source)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]


def test_a_build_killed_mid_way_leaves_no_lock_that_stops_the_next(tmp_path):
    fcntl = pytest.importorskip("fcntl")  # POSIX; on Windows torch's own lock alone guards a build
    (tmp_path / "lock").write_text("")  # torch's lock, as a build killed by SIGKILL leaves it behind
    with native.build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()  # dead: no charlm process holds the build
        with open(tmp_path / ".charlm-build.lock") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # while held, no other process builds


def test_the_kernels_build_from_copies_in_their_folder_so_every_checkout_builds_alike(tmp_path):
    # ninja's build file names the sources' paths: from two checkouts sharing a cache, the kernels
    # were rebuilt at every switch. The copies sit in the build folder, rewritten only if they differ.
    sources = native._sources_in(tmp_path)
    assert [p.parent for p in sources] == [tmp_path / "src"] * len(native.SOURCES)
    assert (tmp_path / "src" / "cells.h").read_bytes() == (native.CSRC / "cells.h").read_bytes()
    stamp = sources[0].stat().st_mtime_ns
    assert native._sources_in(tmp_path) == sources and sources[0].stat().st_mtime_ns == stamp

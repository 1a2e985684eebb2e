"""The machine probe and the choices made from it, on simulated machines of every kind.

Each kind of machine is a :class:`Machine` built by hand, so both sides of every hardware branch run
here whatever CPU this is: an AVX2-only laptop, a Xeon with AMX, an arm64 Mac, a GPU box.
"""

import os

import pytest
import torch

from charlm.hardware import machine
from charlm.hardware.machine import Choice, Machine

AVX2 = frozenset({"avx2", "fma", "bmi2"})
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
ZEN3 = Machine(cpu_model="AMD EPYC 7B13", cpu_features=AVX2, cores=2, onednn_bf16=False, compiler="cc")
ZEN5 = Machine(cpu_model="AMD EPYC 9B45", cpu_features=AVX512 | {"avx512_bf16"}, cores=2, onednn_bf16=True)
XEON_AMX = Machine(cpu_model="Intel Xeon", cpu_features=AVX512 | {"avx512_bf16", "amx_bf16", "amx_tile"},
                   cores=2, onednn_bf16=True)
# AVX-512 without bf16 instructions: oneDNN emulates bf16, slower than fp32
SKYLAKE = Machine(cpu_model="Intel Xeon Skylake", cpu_features=AVX512, cores=4, onednn_bf16=True)
MAC = Machine(arch="arm64", cpu_model="Apple M2", cpu_features=frozenset({"asimd", "bf16"}), cores=8,
              mps=True)
H200 = Machine(cpu_model="Intel Xeon", cpu_features=AVX512, cores=16, onednn_bf16=True,
               cuda="NVIDIA H200", cuda_bf16=True)
T4 = Machine(cpu_model="Intel Xeon", cpu_features=AVX2, cores=4, cuda="Tesla T4", cuda_bf16=False)

CPUINFO_X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2 sha_ni

processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2 sha_ni
"""
CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16 sve
CPU implementer\t: 0x41
"""


def test_cpuinfo_gives_the_model_and_the_features_charlm_uses():
    assert machine.parse_cpuinfo(CPUINFO_X86) == ("AMD EPYC 7B13 64-Core Processor",
                                                  frozenset({"avx2", "fma", "bmi2"}))
    model, features = machine.parse_cpuinfo(CPUINFO_ARM)
    assert features == {"asimd", "bf16", "sve"}


def test_the_probe_describes_this_machine():
    here = machine.probe()
    assert here is machine.probe()  # probed once
    assert 1 <= here.cores <= (os.cpu_count() or 1)
    assert here.arch in ("x86_64", "arm64") or here.arch
    if os.path.exists("/proc/cpuinfo") and here.arch == "x86_64":
        text = open("/proc/cpuinfo").read()
        assert ("avx2" in here.cpu_features) == (" avx2" in text)


@pytest.mark.parametrize("facts, expected", [
    (ZEN3, "fp32"), (SKYLAKE, "fp32"), (ZEN5, "bf16"), (XEON_AMX, "bf16"), (MAC, "fp32"),
])
def test_auto_precision_on_the_cpu_is_bf16_only_where_it_runs_in_hardware(facts, expected):
    assert machine.choose_precision("auto", facts, "cpu").value == expected


def test_auto_precision_on_a_gpu_is_bf16_from_compute_capability_8():
    assert machine.choose_precision("auto", H200, "cuda").value == "bf16"
    assert machine.choose_precision("auto", T4, "cuda").value == "fp32"
    assert machine.choose_precision("auto", MAC, "mps").value == "fp32"


def test_fp32_is_always_granted():
    for facts in (ZEN3, XEON_AMX, MAC, T4):
        assert machine.choose_precision("fp32", facts, "cpu") == Choice("fp32", "asked for")


def test_bf16_where_it_cannot_run_is_an_error_that_names_the_flag():
    with pytest.raises(ValueError, match=r"^--precision bf16: this CPU \(AMD EPYC 7B13, no AVX-512 BF16 / "
                                         r"AMX\) cannot run bf16; use --precision auto or fp32$"):
        machine.choose_precision("bf16", ZEN3, "cpu")
    with pytest.raises(ValueError, match="--precision must be one of auto, fp32, bf16, got 'fp16'"):
        machine.choose_precision("fp16", XEON_AMX)


def test_bf16_that_would_be_emulated_is_granted_with_a_note():
    choice = machine.choose_precision("bf16", SKYLAKE, "cpu")
    assert choice.value == "bf16" and "emulated" in choice.reason


def test_the_device_is_cuda_then_mps_then_cpu():
    assert machine.choose_device("auto", H200).value == "cuda"
    assert machine.choose_device("auto", MAC).value == "mps"
    assert machine.choose_device("auto", ZEN3).value == "cpu"
    with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
        machine.choose_device("cuda", ZEN3)
    with pytest.raises(ValueError, match="--device mps: MPS is not available"):
        machine.choose_device("mps", H200)
    with pytest.raises(ValueError, match="--device must be one of"):
        machine.choose_device("tpu", H200)


@pytest.mark.parametrize("others, threads", [(None, 2), (0.0, 2), (0.4, 2), (0.6, 1), (1.0, 1), (2.0, 1)])
def test_threads_are_one_per_cpu_that_other_processes_leave_at_least_half_free(others, threads):
    assert machine.choose_threads(ZEN3, others).value == str(threads)


def test_threads_on_a_large_machine_give_way_to_each_busy_cpu():
    big = machine.replace(H200, cores=16)
    assert machine.choose_threads(big, 3.0).value == "13"


def test_torch_runs_bf16_lstms_here_exactly_when_the_probe_says_so():
    try:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            torch.nn.LSTM(4, 4)(torch.zeros(3, 2, 4))
        runs = True
    except RuntimeError:
        runs = False
    assert machine.probe().onednn_bf16 == runs

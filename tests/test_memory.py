"""Huge-page advice for the kernels' large outputs: when it is given, that the kernel sees it, and that it never
changes a value."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from psn_zoo.neurons import _memory, make_neuron

LINUX_MADVISE = sys.platform.startswith("linux") and _memory.thp_mode() == "madvise"
needs_madvise = pytest.mark.skipif(not LINUX_MADVISE, reason="needs Linux with transparent huge pages in madvise mode")


@pytest.fixture
def advice(monkeypatch):
    """Switch the advice on or off for one test (the libc lookup is cached per process)."""

    def switch(on: bool) -> None:
        monkeypatch.setenv("PSN_ZOO_HUGE_PAGES", "1" if on else "0")
        _memory._madvise.cache_clear()

    yield switch
    _memory._madvise.cache_clear()


@pytest.mark.parametrize(
    ("text", "mode"),
    [("always [madvise] never\n", "madvise"), ("[always] madvise never\n", "always"),
     ("always madvise [never]\n", "never"), ("garbage\n", None)],
)  # fmt: skip
def test_thp_mode_reads_the_bracketed_choice(tmp_path, text, mode):
    path = tmp_path / "enabled"
    path.write_text(text)
    assert _memory.thp_mode(path) == mode
    assert _memory.thp_mode(tmp_path / "missing") is None


def _vma_of(address: int) -> dict[str, str]:
    """The /proc/self/smaps entry of the mapping that holds ``address``."""
    entry: dict[str, str] = {}
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if head:
            inside = int(head[1], 16) <= address < int(head[2], 16)
            continue
        if inside and ":" in line:
            key, value = line.split(":", 1)
            entry[key] = value.strip()
    return entry


@needs_madvise
def test_large_buffers_are_advised_and_the_kernel_marks_their_mapping(advice):
    advice(True)
    out = _memory.fresh_like(torch.empty(4, 2**22))  # 64 MiB
    assert _memory.advise_huge_pages(out)
    vma = _vma_of(out.data_ptr() + out.nbytes // 2)
    assert re.search(r"\bhg\b", vma["VmFlags"]), vma  # VM_HUGEPAGE: the kernel recorded the advice
    assert vma.get("THPeligible") == "1", vma


def test_no_advice_where_it_cannot_help(advice):
    advice(True)
    assert not _memory.advise_huge_pages(torch.empty(1024))  # under MIN_BYTES
    assert not _memory.advise_huge_pages(torch.empty(0))
    advice(False)  # PSN_ZOO_HUGE_PAGES=0
    assert not _memory.advise_huge_pages(torch.empty(4, 2**22))


def test_fresh_like_is_empty_like():
    x = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    y = _memory.fresh_like(x)
    assert (y.shape, y.dtype, y.stride(), y.device) == (x.shape, x.dtype, x.stride(), x.device)
    assert y.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("spec", [{"name": "psn", "T": 4}, {"name": "sliding_psn", "k": 2},
                                  {"name": "lif", "tau": 2.0}], ids=lambda s: s["name"])  # fmt: skip
def test_huge_pages_change_no_value(spec, advice):
    """Spikes and gradients of a 16 MiB input, with and without the advice, are bit-identical."""
    torch.manual_seed(0)
    x, grad = torch.randn(4, 2**20) * 2, torch.randn(4, 2**20)
    results = []
    for on in (False, True):
        advice(on)
        neuron = make_neuron(spec)
        with torch.no_grad():
            for p in neuron.parameters():
                p.copy_(torch.linspace(-0.9, 0.6, p.numel()).reshape(p.shape))
        xg = x.clone().requires_grad_(True)
        out = neuron(xg)
        out.backward(grad)
        results.append([out.detach(), xg.grad, *[p.grad for p in neuron.parameters()]])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)

"""Hostile and clumsy inputs at the native boundary: a damaged or planted kernel cache, and tensors of any shape,
dtype, layout or device through the public functional API. The C code trusts its pointers, so nothing a Python
caller can build may reach it unchecked (each case asserts the exact safe outcome)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import OrderedDict

import pytest
import torch

from psn_zoo.neurons import _native, functional, make_surrogate

ATAN = make_surrogate("atan")
needs_compiler = pytest.mark.skipif(
    _native.find_compiler() is None or not _native.enabled(), reason="no C compiler, or PSN_ZOO_NATIVE=0 set"
)

#: A fresh process that loads the kernel from $PSN_ZOO_CACHE and runs a PSN through it (prints the build state).
LOAD_AND_RUN = textwrap.dedent(
    """
    import logging, torch
    logging.basicConfig(level=logging.WARNING)
    from psn_zoo.neurons import _native, PSN
    kernels = _native.load()
    x = torch.randn(4, 1000)
    assert _native.dense_kernels(x, torch.empty(4, 4), torch.empty(4), PSN(4).surrogate) is kernels
    PSN(4)(x.requires_grad_(True)).sum().backward()
    print("LOADED", kernels.path)
    """
)


def _run(cache, env_extra=None):
    env = {**os.environ, "PSN_ZOO_CACHE": str(cache), **(env_extra or {})}
    env.pop("PSN_ZOO_NATIVE", None)
    return subprocess.run([sys.executable, "-c", LOAD_AND_RUN], env=env, capture_output=True, text=True, timeout=300)


@needs_compiler
@pytest.mark.parametrize("damage", ["truncate", "flip_a_byte", "delete_record", "garbage"])
def test_a_damaged_cached_library_is_rebuilt_not_loaded(damage, tmp_path):
    """Truncated to half its size, the library used to kill every later run with a bus error inside dlopen; now its
    size and sha256 are checked against the build record first, and a mismatch is rebuilt with a warning naming
    the file."""
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr
    library = next((tmp_path / "kernels").glob("*.so"))
    data = library.read_bytes()
    if damage == "truncate":
        library.write_bytes(data[: len(data) // 2])
    elif damage == "flip_a_byte":
        library.write_bytes(data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:])
    elif damage == "delete_record":
        _native.record_path(library).unlink()
    else:
        library.write_bytes(b"\x7fELF" + os.urandom(4000))
    again = _run(tmp_path)
    assert again.returncode == 0, f"the run died ({again.returncode}):\n{again.stderr[-2000:]}"
    assert "rebuilding it" in again.stderr and str(library) in again.stderr
    _native.verify(library)  # the rebuilt library matches its new record


@needs_compiler
def test_a_symlink_planted_in_the_kernel_cache_is_replaced_not_followed(tmp_path):
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr
    library = next((tmp_path / "kernels").glob("*.so"))
    victim = tmp_path / "victim.so"
    original = library.read_bytes()
    victim.write_bytes(original)  # even a valid library behind a link is not trusted
    library.unlink()
    library.symlink_to(victim)
    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr
    assert "not a regular file" in again.stderr
    assert not library.is_symlink() and library.is_file()
    assert victim.read_bytes() == original  # the link's target is left alone
    _native.verify(library)


#: A library that runs code as soon as it is loaded (a constructor) and claims the kernel's ABI.
PLANTED_C = textwrap.dedent(
    """
    #include <stdio.h>
    #include <stdlib.h>
    __attribute__((constructor)) static void planted(void) {
        const char *marker = getenv("PLANTED_MARKER");
        FILE *f = marker ? fopen(marker, "w") : NULL;
        if (f) { fputs("ran", f); fclose(f); }
    }
    int psn_abi_version(void) { return %d; }
    int psn_vector_bits(void) { return 0; }
    """
)

#: A fresh process that loads the kernel from $PSN_ZOO_CACHE and reports what it loaded.
LOAD_ONLY = "from psn_zoo.neurons import _native; k = _native.load(); print('LOADED', None if k is None else k.path)"


def _plant(library, tmp_path):
    """Compile the planted library at ``library`` with a build record that certifies it (as an attacker who can
    write the folder would)."""
    source = tmp_path / "planted.c"
    source.write_text(PLANTED_C % _native.ABI_VERSION)
    built = tmp_path / "planted.so"
    subprocess.run([_native.find_compiler(), "-shared", "-fPIC", "-o", str(built), str(source)], check=True)
    library.write_bytes(built.read_bytes())
    data = library.read_bytes()
    record = {"size": len(data), "sha256": __import__("hashlib").sha256(data).hexdigest()}
    _native.record_path(library).write_text(__import__("json").dumps(record))


@needs_compiler
@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX ownership")
@pytest.mark.parametrize("where", ["shared-folder", "shared-file"])
def test_a_library_planted_where_others_can_write_is_never_loaded(where, tmp_path, monkeypatch):
    """A self-certifying library (its record written by the same hand) in a folder or file others may write: its
    code must not run. A shared folder is not used at all (the PyTorch path runs, the warning says how to fix the
    folder); a shared file inside a private folder is rebuilt."""
    monkeypatch.setenv("PSN_ZOO_CACHE", str(tmp_path / "cache"))
    library = _native.library_path(_native.find_compiler())
    library.parent.mkdir(parents=True)
    _plant(library, tmp_path)
    if where == "shared-folder":
        library.parent.chmod(0o777)
    else:
        library.parent.chmod(0o700)
        library.chmod(0o666)
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-c", LOAD_ONLY], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PSN_ZOO_CACHE": str(tmp_path / "cache"), "PLANTED_MARKER": str(marker)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "the planted library's code ran"
    assert "others could plant code" in done.stderr
    if where == "shared-folder":
        assert "LOADED None" in done.stdout and "chmod 700" in done.stderr
    else:
        assert f"LOADED {library}" in done.stdout
        _native.verify(library)  # rebuilt, private
        assert library.stat().st_mode & 0o022 == 0


@needs_compiler
def test_a_new_kernel_folder_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("PSN_ZOO_CACHE", str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", LOAD_ONLY], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PSN_ZOO_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert done.returncode == 0 and "LOADED /" in done.stdout, done.stderr
    assert (tmp_path / "cache" / "kernels").stat().st_mode & 0o077 == 0


def test_a_negated_view_is_computed_with_its_sign():
    """``torch._neg_view`` keeps the values and sets a flag: the C kernel reads memory and cannot see it, so the
    kernel path resolves it (weights) or leaves the call to PyTorch (inputs): the spikes of ``-x``, never of ``x``."""
    torch.manual_seed(4)
    x, w, b = torch.randn(4, 1000), torch.randn(4, 4), torch.randn(4)
    want = functional.psn_multi_step(-x, w, b, ATAN)
    assert torch.equal(functional.psn_multi_step(torch._neg_view(x), w, b, ATAN), want)
    assert torch.equal(functional.psn_multi_step(x, torch._neg_view(-w), b, ATAN), functional.psn_multi_step(
        x, w, b, ATAN))
    taps = torch.randn(3)
    assert torch.equal(functional.sliding_psn_multi_step(x, torch._neg_view(-taps), torch._neg_view(-b[0]), ATAN),
                       functional.sliding_psn_multi_step(x, taps, b[0], ATAN))  # fmt: skip


# ------------------------------------------------------------------------------------------- the functional API
def _case(rng: torch.Generator) -> tuple[str, tuple, dict]:
    """A random call of one PSN function: mostly wrong shapes, sometimes right ones, various dtypes/layouts."""
    T = int(torch.randint(1, 40, (), generator=rng))
    N = int(torch.randint(1, 700, (), generator=rng))
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64]
    dtype = dtypes[int(torch.randint(0, len(dtypes), (), generator=rng))]

    def dim(n):  # right most of the time, else off by a random amount
        return n if torch.rand((), generator=rng) < 0.6 else max(0, n + int(torch.randint(-3, 4, (), generator=rng)))

    x = torch.randn(T, N, generator=rng).to(dtype)
    if torch.rand((), generator=rng) < 0.3:
        x = torch.randn(N, T, generator=rng).to(dtype).t()  # a transposed (non-contiguous) view
    kind = ["psn", "masked", "sliding"][int(torch.randint(0, 3, (), generator=rng))]
    if kind == "sliding":
        k = dim(3)
        return kind, (x, torch.randn(k, generator=rng), torch.randn(() if dim(1) == 1 else (2,), generator=rng)), {}
    w, b = torch.randn(dim(T), dim(T), generator=rng), torch.randn(dim(T), generator=rng)
    if kind == "psn":
        return kind, (x, w, b), {}
    mask = torch.ones(dim(T), dim(T))
    return kind, (x, w, mask, 1.0, b), {"k": dim(min(T, 3))}


def _call(kind, args, kwargs):
    if kind == "psn":
        return functional.psn_multi_step(*args, ATAN)
    if kind == "sliding":
        return functional.sliding_psn_multi_step(*args, ATAN)
    x, w, mask, lam, b = args
    return functional.masked_psn_multi_step(x, w, mask, lam, b, ATAN, kwargs["k"])


def _valid(kind, args, kwargs) -> bool:
    x = args[0]
    T = x.shape[0]
    if not x.is_floating_point():
        return False
    if kind == "sliding":
        return args[1].dim() == 1 and args[1].shape[0] >= 1 and args[2].dim() == 0
    w, b = args[1], args[-1]
    ok = w.shape == (T, T) and b.shape == (T,)
    if kind == "masked":
        ok = ok and args[2].shape == (T, T) and 1 <= kwargs["k"] <= T
    return ok


def test_the_documented_crash_gets_a_clear_error():
    """x [8, 4096] with weight [2, 2] and bias [2]: wrong spikes in forward and a heap abort in backward before."""
    x = torch.randn(8, 4096, requires_grad=True)
    with pytest.raises(ValueError, match=r"weight must have shape \[8, 8\].*got \[2, 2\]"):
        functional.psn_multi_step(x, torch.randn(2, 2, requires_grad=True), torch.randn(2), ATAN)


def test_the_native_boundary_checks_what_it_is_given():
    """Even called directly (skipping the functional checks), the kernel object refuses bad tensors."""
    kernels = _native.load()
    if kernels is None:
        pytest.skip("no native kernel here")
    x = torch.randn(8, 300)
    good = torch.randn(8, 8), torch.randn(8), torch.empty(8, 300)
    for bad in [
        (torch.randn(2, 2), torch.randn(8), torch.empty(8, 300)),
        (torch.randn(8, 8), torch.randn(3), torch.empty(8, 300)),
        (torch.randn(8, 8), torch.randn(8), torch.empty(8, 299)),
        (torch.randn(8, 8).double(), torch.randn(8), torch.empty(8, 300)),
    ]:
        with pytest.raises(ValueError, match="fused PSN kernel"):
            kernels.forward(x, *bad)
    with pytest.raises(ValueError, match="not contiguous"):
        kernels.forward(torch.randn(300, 8).t(), *good)
    with pytest.raises(ValueError, match="band"):
        kernels.forward(x, *good, band=9)
    with pytest.raises(ValueError, match="grad_w"):
        kernels.backward(x, good[0], good[1], torch.randn(8, 300), 2.0, None, torch.empty(4, 4), None)
    with pytest.raises(ValueError, match="taps"):
        kernels.forward_sliding(x, torch.randn(0), torch.tensor(-1.0), torch.empty(8, 300))
    with pytest.raises(ValueError, match="grad_taps"):
        kernels.backward_sliding(x, torch.randn(3), torch.tensor(-1.0), torch.randn(8, 300), 2.0, None,
                                 torch.empty(5), None)  # fmt: skip


def test_fuzz_the_functional_api_with_random_shapes_and_dtypes():
    """400 random calls, forward and backward: every one either computes spikes of the input's shape and dtype
    (equal to the float64 reference up to ties) or raises a clear ValueError/TypeError naming the function; never
    a crash, a wrong result or an error from inside torch."""
    rng = torch.Generator().manual_seed(2024)
    outcomes = {"ran": 0, "refused": 0}
    for _ in range(400):
        kind, args, kwargs = _case(rng)
        args = tuple(a.detach().requires_grad_(a.is_floating_point()) if isinstance(a, torch.Tensor) else a
                     for a in args)  # fmt: skip
        if not _valid(kind, args, kwargs):
            with pytest.raises((ValueError, TypeError), match=r"psn_multi_step|sliding_psn_multi_step"):
                _call(kind, args, kwargs)
            outcomes["refused"] += 1
            continue
        out = _call(kind, args, kwargs)
        x = args[0]
        assert out.shape == x.shape and out.dtype == x.dtype
        assert set(out.unique().tolist()) <= {0.0, 1.0}
        out.float().sum().backward()
        assert x.grad is not None and x.grad.shape == x.shape and torch.isfinite(x.grad.float()).all()
        ref = _call(kind, tuple(a.detach().double() if isinstance(a, torch.Tensor) else a for a in args), kwargs)
        if x.dtype == torch.float32:  # in float32 every spike away from a tie equals the float64 one
            assert (out.double() != ref).float().mean() < 1e-3
        outcomes["ran"] += 1
    assert outcomes["ran"] > 50 and outcomes["refused"] > 50, outcomes


# ----------------------------------------------------------------------------------- the output buffer pool
@pytest.fixture
def pool(monkeypatch):
    """A fresh, empty buffer pool with a given cap in MiB for one test (restored afterwards)."""
    from psn_zoo.neurons import _memory

    def make(mb: str) -> None:
        monkeypatch.setenv("PSN_ZOO_BUFFER_POOL_MB", mb)
        _memory.pool_limit_bytes.cache_clear()

    monkeypatch.setattr(_memory, "_pool", OrderedDict())
    yield make
    _memory.pool_limit_bytes.cache_clear()


def test_a_held_pooled_output_is_never_handed_out_again(pool):
    """Outputs, gradients, views and saved tensors all keep their buffer: only a buffer no tensor holds is reused,
    and a reused output is an ordinary tensor (in-place ops and resizing work, its values are its own)."""
    from psn_zoo.neurons import PSN, _memory

    pool("64")
    torch.manual_seed(0)
    neuron, x = PSN(4), torch.randn(4, 2**16)
    kept = [neuron(x * s) for s in (1.0, 2.0, 3.0)]  # three held outputs: three buffers
    copies = [k.clone() for k in kept]
    view = kept[0].view(-1)[:10]
    del kept[0]  # its view still holds the buffer
    fresh = neuron(x * 4.0)
    assert len({t.untyped_storage().data_ptr() for t in (view, *kept, fresh)}) == 4
    assert torch.equal(view, copies[0].view(-1)[:10]) and all(map(torch.equal, kept, copies[1:]))
    del view
    with torch.no_grad():
        again = neuron(x)
    assert torch.equal(again, copies[0])
    again.mul_(2).resize_(8, 2**16)  # an ordinary tensor: no view of a pool tensor, resizable
    assert again._base is None and again.shape == (8, 2**16)
    xg = x.clone().requires_grad_(True)
    out = neuron(xg)
    out.backward(torch.ones_like(out))
    grad = xg.grad.clone()
    neuron(xg).backward(torch.ones_like(out))  # accumulates into the held x.grad, which no new output may take
    assert torch.equal(xg.grad, 2 * grad)
    assert _memory.pooled_bytes() <= 64 << 20


def test_the_pool_keeps_to_its_cap_and_releases_free_buffers(pool):
    from psn_zoo.neurons import _memory

    pool("2")  # 2 MiB: one 1 MiB buffer fits twice, not three times
    like = torch.empty(2**18)  # 1 MiB
    a, b, c = (_memory.fresh_like(like) for _ in range(3))
    assert _memory.pooled_bytes() == 2 * 2**20
    assert len({t.data_ptr() for t in (a, b, c)}) == 3
    del a
    assert _memory.release_pool() == 2**20 and _memory.pooled_bytes() == 2**20
    pool("0")
    _memory._pool.clear()
    _memory.fresh_like(like)
    assert _memory.pooled_bytes() == 0
    pool("lots")
    with pytest.raises(ValueError, match="PSN_ZOO_BUFFER_POOL_MB"):
        _memory.fresh_like(like)


def test_a_full_pool_drops_free_buffers_of_the_least_recently_used_sizes(pool):
    """Sizes a run has moved on from never lock the pool out of the sizes it uses now (a neuron swept over T once
    filled the pool by T = 27, and every later output faulted afresh); a buffer a tensor holds is never dropped."""
    from psn_zoo.neurons import _memory

    def pooled(t: torch.Tensor) -> bool:
        return t.untyped_storage().data_ptr() in {st.data_ptr() for sts in _memory._pool.values() for st in sts}

    pool("4")
    likes = [torch.empty(2**17 + 64 * i) for i in range(4)]  # four sizes of about 0.5 MiB
    size = [like.nbytes for like in likes]
    held = _memory.fresh_like(likes[0])  # the oldest size, held by a tensor
    for like in likes[1:]:
        _memory.fresh_like(like)  # made and let go: free
    _memory.fresh_like(likes[1])  # size 1 used again: more recent than sizes 2 and 3
    assert list(_memory._pool) == [size[0], size[2], size[3], size[1]]
    got = _memory.fresh_like(torch.empty(5 * 2**17))  # 2.5 MiB: only fits once two free buffers go
    assert pooled(got) and _memory.pooled_bytes() <= 4 << 20
    assert list(_memory._pool) == [size[0], size[1], got.nbytes], "the least recently used free sizes went first"
    assert pooled(held), "a held buffer is never dropped"
    also_held = _memory.fresh_like(likes[1])  # reuses the free buffer of size 1
    assert pooled(also_held)
    extra = _memory.fresh_like(torch.empty(2**18))  # 1 MiB more does not fit and nothing is free: not pooled
    assert not pooled(extra) and _memory.pooled_bytes() <= 4 << 20
    assert list(_memory._pool) == [size[0], got.nbytes, size[1]], "a size that was not pooled leaves no entry"


def test_pooled_outputs_change_no_value(pool):
    """Spikes and gradients through reused buffers equal those through fresh ones, bit for bit."""
    from psn_zoo.neurons import make_neuron

    torch.manual_seed(0)
    x, grad = torch.randn(8, 2**16), torch.randn(8, 2**16)
    results = []
    for mb in ("0", "64", "64"):
        pool(mb)
        for spec in ({"name": "psn", "T": 8}, {"name": "sliding_psn", "k": 3}, {"name": "lif", "tau": 2.0}):
            torch.manual_seed(1)
            neuron = make_neuron(spec)
            for _ in range(2):  # the second call reuses the first one's buffers
                if hasattr(neuron, "reset"):
                    neuron.reset()
                xg = x.clone().requires_grad_(True)
                out = neuron(xg)
                out.backward(grad)
                results.append((mb, spec["name"], out.detach().clone(), xg.grad.clone()))
                del out, xg
    reference = {name: (o, g) for mb, name, o, g in results if mb == "0"}
    for _, name, o, g in results:
        assert torch.equal(o, reference[name][0]) and torch.equal(g, reference[name][1])


def test_a_storage_held_by_name_or_shared_with_another_process_is_never_handed_out_again(pool):
    """Two holders no tensor count sees: ``out.untyped_storage()`` (the pool's own storage object) and a tensor
    moved to shared memory, as ``torch.multiprocessing`` does when it sends one to another process (which reads it
    after this one lets go). Neither buffer is handed out again, so what the holder reads does not change."""
    from psn_zoo.neurons import PSN, _memory

    pool("64")
    torch.manual_seed(0)
    neuron, x = PSN(4), torch.randn(4, 2**16)
    with torch.no_grad():
        out = neuron(x)
        storage, values = out.untyped_storage(), out.clone()
        del out
        later = [neuron(x * s) for s in (2.0, 3.0)]
        assert all(t.untyped_storage().data_ptr() != storage.data_ptr() for t in later)
        assert torch.equal(torch.empty(0).set_(storage, 0, values.shape), values)
        del storage, later
        sent = neuron(x).share_memory_()
        received = torch.empty(0).set_(sent.untyped_storage(), 0, sent.shape)  # the other process's view
        values, pointer = sent.clone(), sent.untyped_storage().data_ptr()
        del sent
        later = [neuron(x * s) for s in (4.0, 5.0, 6.0)]
        assert all(t.untyped_storage().data_ptr() != pointer for t in later)
        assert torch.equal(received, values)
        assert all(not st.is_shared() for sts in _memory._pool.values() for st in sts)  # evicted, not kept forever


def test_an_infinite_pool_cap_is_refused_by_name(pool):
    from psn_zoo.neurons import _memory

    pool("inf")
    with pytest.raises(ValueError, match="PSN_ZOO_BUFFER_POOL_MB must be a finite number"):
        _memory.pool_limit_bytes()


def test_a_pooled_output_resized_by_its_user_leaves_the_pool(pool):
    """``out.untyped_storage().resize_(0)`` (or a grown ``resize_``) changes a pooled buffer's size under the pool:
    the next calls of that size get buffers of their size, and the pool's count stays true."""
    from psn_zoo.neurons import PSN, _memory

    pool("64")
    neuron, x = PSN(4), torch.randn(4, 2**16)
    with torch.no_grad():
        shrunk = neuron(x)
        expected = shrunk.clone()
        shrunk.untyped_storage().resize_(0)
        grown = neuron(x)
        grown.resize_(8, 2**16)
        del shrunk, grown
        again = [neuron(x) for _ in range(3)]
    assert all(torch.equal(a, expected) for a in again)
    sizes = {size: [st.nbytes() for st in sts] for size, sts in _memory._pool.items()}
    assert all(n == size for size, ns in sizes.items() for n in ns), sizes

"""Counter-based render draws: Philox-4x32-10 against Random123's known answers and an independent pure-Python
version, uniform statistics, and independence from batching; a cache of the old draw scheme is refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nvsvideo.cache import CacheMismatchError, InversionCache, StoreMode
from nvsvideo.cache.plan import compatible_manifest
from nvsvideo.models.eg3d.draws import (
    DRAW_SCHEME,
    Draw,
    DrawKeys,
    RenderId,
    counter_uniforms,
    mulhilo32,
    philox4x32,
    uniform24,
)
from nvsvideo.pipelines.invert import InvertConfig, cache_settings

from tiny_models import tiny_triplanenet

CPU = torch.device("cpu")
M32 = 2**32


def philox_reference(counter: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, int, int, int]:
    """Philox-4x32-10 as the paper states it, on Python integers (exact, unbounded)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 % M32, (p0 >> 32) ^ c3 ^ k1, p0 % M32
        k0, k1 = (k0 + 0x9E3779B9) % M32, (k1 + 0xBB67AE85) % M32
    return c0, c1, c2, c3


def reference_uniform(seed: int, frame: int, render: int, draw: int, ray: int, sample: int) -> float:
    """The documented mapping: key = seed's two words, counter = (ray, sample // 4, frame, 2 render + draw)."""
    seed %= 2**64
    words = philox_reference((ray, sample // 4, frame, 2 * render + draw), (seed % M32, seed >> 32))
    return (words[sample % 4] >> 8) / 2**24


def words(*values: int) -> list[torch.Tensor]:
    return [torch.tensor([v], dtype=torch.int64) for v in values]


# Random123 tests/kat_vectors, philox4x32 with 10 rounds: counter, key, output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32 - 1,) * 4, (M32 - 1,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_matches_random123_known_answers(counter, key, expected) -> None:
    assert philox_reference(counter, key) == expected
    assert tuple(int(w) for w in philox4x32(words(*counter), key)) == expected


def test_mulhilo_is_exact_at_the_extremes() -> None:
    a = torch.tensor([0, 1, 0xFFFF, 0x10000, 0x12345678, M32 - 1], dtype=torch.int64)
    for multiplier in (0xD2511F53, 0xCD9E8D57, M32 - 1):
        hi, lo = mulhilo32(a, multiplier)
        assert hi.tolist() == [v * multiplier >> 32 for v in a.tolist()]
        assert lo.tolist() == [v * multiplier % M32 for v in a.tolist()]


def test_uniforms_take_the_top_24_bits_and_never_reach_one() -> None:
    got = uniform24(torch.tensor([0, 0xFF, 0x100, 0x80000000, M32 - 1], dtype=torch.int64))
    assert got.dtype == torch.float32
    assert got.tolist() == [0.0, 0.0, 2.0**-24, 0.5, 1 - 2.0**-24]


@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3, -1])
def test_counter_uniforms_follow_the_documented_keys(seed: int) -> None:
    keys = DrawKeys.of(seed, [0, 5, 2**32 - 1], RenderId.MIRROR)
    jitter, importance = counter_uniforms(keys, 70, (6, 9), CPU)
    assert jitter.shape == (3, 70, 6) and importance.shape == (3, 70, 9)
    for item, frame in enumerate(keys.frames):
        for ray, sample in [(0, 0), (1, 3), (69, 5), (33, 4)]:
            assert jitter[item, ray, sample].item() == reference_uniform(seed, frame, 1, Draw.JITTER, ray, sample)
        for ray, sample in [(0, 8), (42, 1), (69, 7)]:
            assert importance[item, ray, sample].item() == reference_uniform(
                seed, frame, 1, Draw.IMPORTANCE, ray, sample)


def test_draws_do_not_depend_on_the_batch_or_on_how_many_rays_are_drawn() -> None:
    together = counter_uniforms(DrawKeys.of(3, [4, 9, 2], RenderId.NOVEL), 5000, (48, 20), CPU)
    for item, frame in enumerate([4, 9, 2]):
        alone = counter_uniforms(DrawKeys.of(3, [frame], RenderId.NOVEL), 5000, (48, 20), CPU)
        assert all(torch.equal(t[item:item + 1], a) for t, a in zip(together, alone, strict=True))
    fewer_rays = counter_uniforms(DrawKeys.of(3, [9], RenderId.NOVEL), 37, (48, 20), CPU)
    assert all(torch.equal(t[1:2, :37], f) for t, f in zip(together, fewer_rays, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draws_equal_cpu_draws_bitwise() -> None:
    keys = DrawKeys.of(11, [0, 3, 8], RenderId.INPUT_VIEW)
    on_cpu = counter_uniforms(keys, 16384, (96, 96), CPU)
    on_cuda = counter_uniforms(keys, 16384, (96, 96), torch.device("cuda"))
    assert all(torch.equal(c, g.cpu()) for c, g in zip(on_cpu, on_cuda, strict=True))


def test_every_key_part_changes_the_draws() -> None:
    base = DrawKeys.of(1, [10], RenderId.INITIAL)
    reference = counter_uniforms(base, 64, (8, 8), CPU)
    variants = [DrawKeys.of(2, [10], RenderId.INITIAL), DrawKeys.of(1, [11], RenderId.INITIAL),
                base.for_render(RenderId.INPUT_VIEW), DrawKeys.of(1 + 2**32, [10], RenderId.INITIAL)]
    for keys in variants:
        other = counter_uniforms(keys, 64, (8, 8), CPU)
        assert all((o != r).float().mean() > 0.99 for o, r in zip(other, reference, strict=True))
    assert (reference[0] != reference[1]).float().mean() > 0.99  # the two draws differ too


def test_draw_keys_refuse_counters_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="frame"):
        DrawKeys.of(0, [-1])
    with pytest.raises(ValueError, match="frame"):
        DrawKeys.of(0, [2**32])
    with pytest.raises(ValueError, match="render"):
        DrawKeys.of(0, [0], render=2**31)


def test_uniform_statistics() -> None:
    """Mean, variance, a 64-bin histogram and correlations between neighbouring counters, all at 5 sigma."""
    jitter, importance = counter_uniforms(DrawKeys.of(0, [0, 1]), 4096, (64, 64), CPU)
    x = jitter.double()
    n = x.numel()
    assert abs(x.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    # The variance of a sample variance of U(0,1) is (1/80 - 1/144) / n.
    assert abs(x.var().item() - 1 / 12) < 5 * math.sqrt((1 / 80 - 1 / 144) / n)
    counts = torch.bincount((x * 64).long().flatten(), minlength=64).double()
    expected = n / 64
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 63 + 5 * math.sqrt(2 * 63)

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.double().flatten() - 0.5, b.double().flatten() - 0.5
        return (a * b).mean().item() * 12

    pairs = {
        "adjacent samples": (x[..., :-1], x[..., 1:]),
        "samples 4 apart (the next counter block)": (x[..., :-4], x[..., 4:]),
        "adjacent rays": (x[:, :-1], x[:, 1:]),
        "adjacent frames": (x[0], x[1]),
        "the two draws": (x, importance),
    }
    for name, (a, b) in pairs.items():
        assert abs(corr(a, b)) < 5 / math.sqrt(a.numel()), name


def test_the_cache_records_the_draw_scheme_and_refuses_an_older_one(tmp_path: Path) -> None:
    settings = cache_settings(tiny_triplanenet("v1"), InvertConfig(), {"source": "clip"})
    assert settings["draws"] == DRAW_SCHEME
    older = {key: value for key, value in settings.items() if key != "draws"}
    directory = tmp_path / "inversion"
    options = {"n_frames": 4, "fingerprints": {"model0": "x"}, "store": StoreMode.PLANES, "chunk_size": 2}
    with InversionCache.open(directory, settings=older, on_warning=lambda _: None, **options):
        pass
    check = {"settings": settings, "fingerprints": options["fingerprints"], "store": StoreMode.PLANES,
             "chunk_size": 2}
    with pytest.raises(CacheMismatchError) as refused:
        compatible_manifest(directory, **check, fresh=False)
    message = str(refused.value)
    assert refused.value.exit_code == 3
    assert "scheme of random depth samples" in message and "--fresh" in message
    with pytest.raises(CacheMismatchError):  # never mixed, even without the check before work
        InversionCache.open(directory, settings=settings, on_warning=lambda _: None, **options)
    assert compatible_manifest(directory, **check, fresh=True) is None
    warnings: list[str] = []
    with InversionCache.open(directory, settings=settings, on_warning=warnings.append, reset=True, **options):
        pass
    assert warnings and compatible_manifest(directory, **check, fresh=False) is not None

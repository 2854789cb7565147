"""Low-precision emulation core: exact casts, scaling modes, STE autograd, config, diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from kss_lora.errors import ConfigError
from kss_lora.precision import (
    FORMATS,
    EmulationConfig,
    fake_quant,
    fake_quant_ste,
    gamma_sweep,
    get_format,
    quantize,
    quantize_grad,
    representable_values,
    underflow_stats,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


TORCH_FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def _sweep(name: str) -> torch.Tensor:
    """Every finite value, every midpoint (ties), one float32 ulp either side, and randoms at all scales."""
    all_codes = torch.arange(256, dtype=torch.uint8).view(TORCH_FP8[name]).float()
    v = torch.sort(all_codes[torch.isfinite(all_codes)].unique()).values
    mids = (v[1:] + v[:-1]) / 2
    up = torch.nextafter(mids, torch.tensor(math.inf))
    down = torch.nextafter(mids, torch.tensor(-math.inf))
    tiny = torch.tensor([FORMATS[name].min_subnormal * f for f in (0.5, 0.49, 0.51, 0.25, 1e-3)])
    g = torch.Generator().manual_seed(0)
    rnd = torch.cat([torch.randn(4000, generator=g) * 2.0**k for k in range(-26, 17)])
    x = torch.cat([v, mids, up, down, tiny, rnd])
    x = torch.cat([x, -x])
    return x[x.abs() <= FORMATS[name].max_value]


@pytest.mark.parametrize("name", ["e4m3", "e5m2"])
def test_quantize_matches_torch_native_cast_bit_for_bit(name: str) -> None:
    x = _sweep(name)
    ref = x.to(TORCH_FP8[name]).float()
    q = quantize(x, name)
    assert q.dtype == x.dtype
    # Compare bit patterns so signed zeros must match too.
    assert torch.equal(q.view(torch.int32), ref.view(torch.int32))


@pytest.mark.parametrize("name", ["e4m3", "e5m2"])
def test_bf16_input_keeps_dtype_and_matches(name: str) -> None:
    x = _sweep(name).to(torch.bfloat16)
    q = quantize(x, name)
    assert q.dtype == torch.bfloat16
    assert torch.equal(q.float(), x.float().to(TORCH_FP8[name]).float())


def test_e2m1_hand_table() -> None:
    table = {
        0.0: 0.0,
        0.2: 0.0,
        0.25: 0.0,
        0.26: 0.5,
        0.5: 0.5,
        0.75: 1.0,
        1.0: 1.0,
        1.25: 1.0,
        1.5: 1.5,
        1.75: 2.0,
        2.0: 2.0,
        2.5: 2.0,
        3.0: 3.0,
        3.5: 4.0,
        4.0: 4.0,
        5.0: 4.0,
        5.5: 6.0,
        6.0: 6.0,
        7.0: 6.0,
        1e6: 6.0,
    }
    x = torch.tensor(list(table))
    expected = torch.tensor(list(table.values()))
    assert torch.equal(quantize(x, "e2m1"), expected)
    assert torch.equal(quantize(-x, "e2m1"), -expected)
    assert representable_values("e2m1").tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def test_representable_values_are_fixed_points() -> None:
    for name, fmt in FORMATS.items():
        v = representable_values(name)
        assert v[-1] == fmt.max_value and v[1] == fmt.min_subnormal
        assert torch.equal(quantize(v, name), v)
        assert torch.equal(quantize(v.float(), name), v.float())


def test_format_constants() -> None:
    e4, e5, e2 = FORMATS["e4m3"], FORMATS["e5m2"], FORMATS["e2m1"]
    assert (e4.max_value, e4.min_normal, e4.min_subnormal, e4.has_inf) == (448, 2**-6, 2**-9, False)
    assert (e5.max_value, e5.min_normal, e5.min_subnormal, e5.has_inf) == (57344, 2**-14, 2**-16, True)
    assert (e2.max_value, e2.min_normal, e2.min_subnormal) == (6, 1, 0.5)
    assert (e4.emax, e5.emax, e2.emax) == (8, 15, 2)
    with pytest.raises(ConfigError) as err:
        get_format("fp7")
    assert str(err.value) == "precision.format: unknown format 'fp7'; allowed: e4m3, e5m2, e2m1"


def test_special_values_and_saturation() -> None:
    inf, nan = math.inf, math.nan
    x = torch.tensor([nan, inf, -inf, 1e9, -1e9, 2**-9, 2**-10, 2**-10 * 1.01, 0.0, -0.0])
    q = quantize(x, "e4m3")
    assert math.isnan(q[0])
    assert q[1:5].tolist() == [448, -448, 448, -448]
    assert q[5:8].tolist() == [2**-9, 0.0, 2**-9]  # half the min subnormal ties to even (zero)
    assert torch.equal(torch.signbit(q[8:]), torch.tensor([False, True]))
    q = quantize(x, "e4m3", saturate=False)
    assert torch.isnan(q[:5]).all()  # E4M3FN has no inf: overflow is NaN
    q = quantize(x, "e5m2", saturate=False)
    assert q[1:5].tolist() == [inf, -inf, inf, -inf]
    # Exactly max + half a spacing rounds to even (upwards for E5M2: 61440 -> 65536 -> overflow).
    assert quantize(torch.tensor([61439.0, 61440.0]), "e5m2", saturate=False).tolist() == [57344, inf]
    assert quantize(torch.tensor([61440.0, 1e30]), "e5m2").tolist() == [57344, 57344]
    assert quantize(torch.tensor([464.0, 465.0]), "e4m3", saturate=False)[0] == 448
    assert math.isnan(quantize(torch.tensor([465.0]), "e4m3", saturate=False)[0])
    with pytest.raises(ConfigError):
        quantize(x, "e4m3", rounding="up")


def test_stochastic_rounding_unbiased_and_seeded() -> None:
    x = torch.tensor([0.3, 1.1, 2**-8, 300.0, -5.3, 2**-11]).repeat(40000, 1)
    q = quantize(x, "e4m3", rounding="stochastic", generator=torch.Generator().manual_seed(1))
    assert torch.equal(quantize(q, "e4m3"), q)  # all draws representable
    spacing = torch.tensor([2**-5, 2**-3, 2**-9, 32.0, 0.5, 2**-9])
    # Mean within ~5 standard errors of x (std of one draw is at most spacing / 2).
    assert ((q.mean(0) - x[0]).abs() < 5 * spacing / 2 / 200).all()
    # Not nearest rounding in disguise: both neighbours occur.
    assert (q[:, 0].unique().numel() == 2) and (q[:, 3].unique().numel() == 2)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = quantize(x[:100], "e2m1", rounding="stochastic", generator=g1)
    b = quantize(x[:100], "e2m1", rounding="stochastic", generator=g2)
    assert torch.equal(a, b)


def _multiscale(rows: int, cols: int, lo: float, hi: float, block: int) -> torch.Tensor:
    """Blocks of ``block`` values whose magnitudes span 10**lo .. 10**hi."""
    g = torch.Generator().manual_seed(3)
    n_blocks = rows * (cols // block)
    mags = 10.0 ** torch.linspace(lo, hi, n_blocks)[torch.randperm(n_blocks, generator=g)]
    return torch.randn(rows, cols, generator=g) * mags.reshape(rows, -1).repeat_interleave(block, -1)


def _per_block_error(q: torch.Tensor, x: torch.Tensor, block: int) -> float:
    qb, xb = q.reshape(-1, block), x.reshape(-1, block)
    return float(((qb - xb).norm(dim=1) / xb.norm(dim=1)).mean())


@pytest.mark.parametrize(
    ("fmt", "block_format", "block", "lo", "hi"),
    [("e4m3", "mx", 32, -6, 3), ("e2m1", "mx", 32, -6, 3), ("e2m1", "nvfp4", 16, -2, 2)],
)
def test_block_scaling_beats_tensor_scaling(fmt: str, block_format: str, block: int, lo: int, hi: int) -> None:
    x = _multiscale(8, 128, lo, hi, block)
    err_block = _per_block_error(fake_quant(x, fmt, scaling="block", block_format=block_format), x, block)
    err_tensor = _per_block_error(fake_quant(x, fmt, scaling="tensor"), x, block)
    assert err_block < 0.2 * err_tensor
    assert err_block < {"e4m3": 0.05, "e2m1": 0.2}[fmt]


def test_block_scaling_details() -> None:
    # MX scales are powers of two: a block that is already representable comes back exactly.
    x = torch.tensor([[0.5, -1.5, 3.0, 6.0] * 8]) * 2.0**-20
    assert torch.equal(fake_quant(x, "e2m1", scaling="block"), x)
    # Last dim not a multiple of the block size, and all-zero blocks give zeros, never NaN.
    x = torch.randn(3, 5, 50)
    x[..., :32] = 0
    for bf in ("mx", "nvfp4"):
        q = fake_quant(x, "e2m1", scaling="block", block_format=bf)
        assert q.shape == x.shape and not torch.isnan(q).any()
        assert (q[..., :32] == 0).all() and (q[..., 32:] != 0).any()
        assert _per_block_error(q[..., 32:48], x[..., 32:48], 16) < 0.25
    assert not torch.isnan(fake_quant(torch.zeros(4, 7), "e4m3", scaling="tensor")).any()
    assert fake_quant(torch.tensor(3.3), "e4m3", scaling="block").shape == ()
    # NVFP4 without the per-tensor scale: tiny tensors have E4M3 block scales that underflow.
    tiny = torch.randn(2, 32) * 1e-6
    assert (fake_quant(tiny, "e2m1", scaling="block", block_format="nvfp4", two_level=False) == 0).all()
    assert (fake_quant(tiny, "e2m1", scaling="block", block_format="nvfp4") != 0).any()
    assert fake_quant(torch.randn(4, 8, dtype=torch.bfloat16), "e4m3", scaling="tensor").dtype == torch.bfloat16


def test_gamma_invariance_under_scaling() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 64, generator=g) * 1e-4
    for k in (-6, -1, 3):  # power-of-two gamma: scaled modes commute with it exactly
        for kw in (
            {"scaling": "tensor"},
            {"scaling": "block"},
            {"scaling": "block", "block_format": "nvfp4"},
        ):
            assert torch.equal(fake_quant(x * 2.0**k, "e2m1", **kw), fake_quant(x, "e2m1", **kw) * 2.0**k)
    rows = gamma_sweep(x, "e4m3", [0.0625, 0.3, 1.0, 1.5, 16.0], ("none", "tensor", "block"))
    by = {(r["scaling"], r["gamma"]): r for r in rows}
    raw = [by[("none", gm)]["underflow_frac"] for gm in (0.0625, 0.3, 1.0, 1.5, 16.0)]
    assert raw == sorted(raw, reverse=True) and raw[0] > 0.9 and raw[-1] < 0.5
    tensor = [by[("tensor", gm)] for gm in (0.0625, 0.3, 1.0, 1.5, 16.0)]
    assert max(r["underflow_frac"] for r in tensor) == min(r["underflow_frac"] for r in tensor)
    assert max(r["rel_error"] for r in tensor) - min(r["rel_error"] for r in tensor) < 1e-3


def test_underflow_stats() -> None:
    x = torch.tensor([0.0, 1e-9, 1e-3, 1.0, 1e5, math.nan])
    s = underflow_stats(x, "e4m3")
    assert (s["count"], s["nonzero"]) == (5, 4)
    assert s["underflow_frac"] == 0.25  # 1e-9
    assert s["saturate_frac"] == 0.2  # 1e5 > 448
    assert s["subnormal_frac"] == 0.5  # 1e-9, 1e-3
    assert s["rel_error"] > 0.99
    s = underflow_stats(x, "e4m3", scaling="tensor")
    assert s["saturate_frac"] == 0.0 and s["rel_error"] < 0.1
    assert underflow_stats(torch.zeros(3), "e2m1", scaling="block")["rel_error"] == 0.0


def test_ste_gradient_is_identity() -> None:
    x = (torch.randn(4, 40) * 3).requires_grad_()
    up = torch.randn(4, 40)
    for kw in ({"scaling": "none"}, {"scaling": "tensor"}, {"scaling": "block", "block_format": "nvfp4"}):
        x.grad = None
        y = fake_quant_ste(x, "e2m1", **kw)
        assert torch.equal(y, fake_quant(x.detach(), "e2m1", **kw))
        y.backward(up)
        assert torch.equal(x.grad, up)


def test_quantize_grad_quantizes_only_the_gradient() -> None:
    x = torch.randn(8, 16).requires_grad_()
    y = quantize_grad(x, "e5m2")
    assert torch.equal(y, x)
    up = torch.randn(8, 16) * 1e-3
    y.backward(up)
    assert torch.equal(x.grad, quantize(up, "e5m2"))
    assert not torch.equal(x.grad, up)
    x.grad = None
    quantize_grad(x, "e4m3", scaling="tensor").backward(up)
    assert torch.equal(x.grad, fake_quant(up, "e4m3", scaling="tensor"))
    # Scaled back onto the E4M3 grid, every gradient entry sits (up to float32 rounding) on a grid value.
    on_grid = x.grad / (up.abs().max() / 448)
    assert torch.allclose(quantize(on_grid, "e4m3"), on_grid, rtol=1e-6, atol=0)


def test_emulation_config_validation() -> None:
    cfg = EmulationConfig()
    assert (cfg.forward_format, cfg.backward_format) == ("e4m3", "e5m2")
    assert cfg.forward_spec().fmt is FORMATS["e4m3"] and cfg.backward_spec().fmt is FORMATS["e5m2"]
    assert all(h for h in EmulationConfig.help().values())
    bad = [
        ({"forward_format": "fp8"}, "precision.forward_format"),
        ({"backward_format": "e3m4"}, "precision.backward_format"),
        ({"scaling": "row"}, "precision.scaling"),
        ({"rounding": "down"}, "precision.rounding"),
        ({"block_format": "mx9"}, "precision.block_format"),
        ({"block_size": 0}, "precision.block_size"),
        ({"grad_output": "yes"}, "precision.grad_output"),
    ]
    for kwargs, field in bad:
        with pytest.raises(ConfigError) as err:
            EmulationConfig(**kwargs)
        assert err.value.field == field and "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        EmulationConfig.from_dict({"lora_wieght": False})
    assert err.value.field == "precision.lora_wieght"
    assert EmulationConfig.from_dict({"scaling": "block"}).to_dict()["scaling"] == "block"

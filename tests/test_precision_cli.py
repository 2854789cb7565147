"""`kss precision` on a tiny run, its tables and γ sweep, bad input, and the experiment spec/tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from kss_lora.cli import main
from kss_lora.errors import ConfigError
from kss_lora.precision_lab.experiment import Cell, degradation_table, load_spec


def _write(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def probe_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("probe")
    cfg = _write(tmp, tiny_config(tmp))
    out = tmp / "diag"
    assert main(["precision", cfg, "--steps", "2", "--out", str(out), "--max-elements", "4096"]) == 0
    return out, yaml.safe_load(Path(cfg).read_text())


def test_precision_writes_tables_in_unit_range(probe_out, capsys) -> None:
    out, _ = probe_out
    for name in ("layers.csv", "summary.csv", "gamma_sweep.csv", "precision.md", "precision.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    layers = _rows(out / "layers.csv")
    tensors = {r["tensor"] for r in layers}
    assert {
        "base_input",
        "base_weight",
        "base_grad_output",
        "lora_A_weight",
        "lora_B_weight",
        "lora_A_input",
        "lora_B_input",
        "lora_B_grad_output",
        "lora_update",
    } <= tensors
    assert {r["format"] for r in layers} == {"e4m3", "e5m2", "e2m1"}
    assert {r["scaling"] for r in layers} == {"none", "tensor", "block-mx", "block-nvfp4"}
    for r in layers + _rows(out / "gamma_sweep.csv"):
        for key in ("underflow_frac", "saturate_frac"):
            assert 0.0 <= float(r[key]) <= 1.0, (key, r)
    # Gradients of a tiny loss are far below E4M3's smallest subnormal: raw casting flushes most of them,
    # amax scaling almost none. (This is why FP8 training scales tensors.)
    summary = {(r["tensor"], r["format"], r["scaling"]): float(r["underflow_frac"]) for r in _rows(out / "summary.csv")}
    assert summary[("base_grad_output", "e4m3", "none")] > 0.5 > summary[("base_grad_output", "e4m3", "tensor")]
    assert "Underflow" in (out / "precision.md").read_text()


def test_gamma_sweep_matters_only_for_raw_casting(probe_out) -> None:
    out, _ = probe_out
    sweep = [r for r in _rows(out / "gamma_sweep.csv") if r["tensor"] == "delta_w" and r["format"] == "e4m3"]

    def series(scaling: str) -> list[float]:
        rs = sorted((r for r in sweep if r["scaling"] == scaling), key=lambda r: float(r["gamma"]))
        return [float(r["underflow_frac"]) for r in rs]

    raw, tensor, block = series("none"), series("tensor"), series("block-mx")
    assert len(raw) == len(tensor) >= 5
    assert all(a >= b for a, b in zip(raw, raw[1:])) and raw[0] > raw[-1] + 0.2  # γ rescues raw casts
    assert max(tensor) == min(tensor)  # power-of-two γ: amax scaling sees identical values
    assert max(block) == min(block)


@pytest.mark.parametrize(
    "args, field",
    [
        (["--steps", "0"], "--steps"),
        (["--formats", "e3m4"], "--formats"),
        (["--gammas", "0"], "--gammas"),
        (["precision.emulation.scaling=bogus"], "precision"),
        (["data.source=file", "data.train=/nonexistent/train.csv"], ""),
    ],
)
def test_precision_bad_input_is_one_line(tmp_path, capsys, args, field) -> None:
    cfg = _write(tmp_path, tiny_config(tmp_path))
    assert main(["precision", cfg, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and field in err


def test_precision_missing_config(capsys) -> None:
    assert main(["precision", "/nonexistent/config.yaml"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_shipped_experiment_spec_expands_and_validates() -> None:
    spec = load_spec("precision_gamma_cpu")
    cells = spec.cells()
    per_seed = len(spec.precisions) * len(spec.methods)
    assert len(cells) == per_seed * len(spec.seeds) and {"bf16", "emu-fp8", "emu-fp8-raw", "emu-fp4"} <= set(
        spec.precisions
    )
    assert [c.seed for c in cells[:per_seed]] == [0] * per_seed  # seed-major: a cut-short experiment has whole seeds
    subset = spec.cells([2], ["emu-fp8-raw"])
    assert {c.precision for c in subset} == {"bf16", "emu-fp8-raw"}  # the baseline is always kept
    with pytest.raises(ConfigError, match="precisions"):
        spec.cells(None, ["fp64"])
    gpu = load_spec("precision_gamma_gpu")  # the GPU version validates too (real fp8 next to emulation)
    assert gpu.precisions["fp8"] == {"precision.mode": "fp8"} and len(gpu.seeds) == 5
    by = {(c.precision, c.method): c.config for c in cells if c.seed == 0}
    assert by[("emu-fp8-raw", "standard")].precision.emulation["scaling"] == "none"
    assert by[("bf16", "lora-g1")].method.name == "lora" and by[("bf16", "lora-g1")].method.gamma == 1.0
    assert by[("bf16", "standard")].method.preset == "standard"


def test_experiment_spec_errors(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": "agnews", "conditions": {"precision": {"bf16": {}}}}))
    with pytest.raises(ConfigError, match="conditions"):
        load_spec(str(bad))
    bad.write_text(
        yaml.safe_dump(
            {"base": "agnews", "conditions": {"precision": {"bf16": {"precision.mode": "fp64"}}, "method": {"std": {}}}}
        )
    )
    with pytest.raises(ConfigError, match="precision.mode"):
        load_spec(str(bad))


def test_degradation_is_paired_by_seed_and_method(tmp_path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": "agnews",
                "seeds": [0, 1],
                "conditions": {
                    "precision": {"bf16": {"precision.mode": "bf16"}, "emu-fp8": {"precision.mode": "emu-fp8"}},
                    "method": {"standard": {"method.preset": "standard"}},
                },
            }
        )
    )
    spec = load_spec(str(path))
    cells = [Cell(p, "standard", s, None) for s in (0, 1) for p in ("bf16", "emu-fp8")]  # type: ignore[arg-type]
    losses = {("bf16", 0): 1.0, ("emu-fp8", 0): 1.1, ("bf16", 1): 2.0, ("emu-fp8", 1): 2.6}
    results = {
        c.name: {"status": "ok", "val_loss": losses[(c.precision, c.seed)], "val_accuracy": 0.5, "gamma": 0.5}
        for c in cells
    }
    runs, summary = degradation_table(spec, cells, results)
    degs = sorted(r["degradation"] for r in runs if r["precision"] == "emu-fp8")
    assert degs == pytest.approx([0.1, 0.3])
    row = next(s for s in summary if s["precision"] == "emu-fp8")
    assert row["degradation_mean"] == pytest.approx(0.2) and row["degradation_std"] == pytest.approx(0.1414, abs=1e-3)
    assert json.dumps(summary)  # plain types, ready for CSV/JSON


def test_merged_update_is_swamped_by_w0_whatever_the_scaling() -> None:
    import torch

    from kss_lora.precision_lab.probe import merge_loss

    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(64, 64, generator=g) * 0.05
    delta = torch.randn(64, 64, generator=g) * 1e-4
    for scaling in ("none", "tensor"):
        lost = [merge_loss(w0, gamma * delta, "e4m3", scaling)["lost_frac"] for gamma in (1.0, 16.0, 256.0)]
        assert lost[0] > 0.9 and lost[0] > lost[1] > lost[2], (scaling, lost)  # only a bigger update survives
    assert merge_loss(w0, torch.zeros_like(w0), "e4m3", "none")["lost_frac"] == 0.0

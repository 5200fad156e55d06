"""RDSRN architecture: shapes, shared recursion, paper parameter budget, factory."""

from __future__ import annotations

import pytest
import torch

from rdsrn.models import create_model, list_models
from rdsrn.models.rdsrn import RDSRN


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape(scale: int) -> None:
    m = create_model(f"rdsrn_x{scale}").eval()
    with torch.no_grad():
        y = m(torch.rand(1, 3, 13, 17))
    assert y.shape == (1, 3, 13 * scale, 17 * scale)


def test_default_matches_paper_budget() -> None:
    m = create_model("rdsrn_x4")
    assert (m.scale, m.recursions, m.csr) == (4, 3, 0.5)
    assert abs(n_params(m) - 0.68e6) / 0.68e6 < 0.05


def test_recursion_shares_weights() -> None:
    # Only the 1x1 fusion over the R pass outputs grows with R: 64*64 weights per pass.
    p1, p3, p9 = (n_params(RDSRN(recursions=r)) for r in (1, 3, 9))
    assert p3 - p1 == 2 * 64 * 64 and p9 - p3 == 6 * 64 * 64
    m = RDSRN(recursions=3)
    calls = []
    m.rb.register_forward_hook(lambda *a: calls.append(1))
    m(torch.rand(1, 3, 8, 8))
    assert len(calls) == 3


def test_table1_trends_in_direction() -> None:
    by_csr = [n_params(RDSRN(csr=c)) for c in (0.25, 0.5, 0.75)]
    assert by_csr[0] > by_csr[1] > by_csr[2]
    by_r = [n_params(RDSRN(recursions=r)) for r in (1, 3, 9)]
    assert by_r[0] < by_r[1] < by_r[2]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scale"):
        RDSRN(scale=5)
    with pytest.raises(ValueError, match="csr"):
        RDSRN(csr=1.0)
    with pytest.raises(ValueError, match="recursions"):
        RDSRN(recursions=0)


def test_factory_registry_and_hint() -> None:
    assert {"rdsrn_x2", "rdsrn_x3", "rdsrn_x4"} <= set(list_models())
    with pytest.raises(KeyError, match="did you mean 'rdsrn_x4'"):
        create_model("rdsrn_x44")
    m = create_model("rdsrn_x4", recursions=1, csr=0.25)
    assert (m.recursions, m.csr) == (1, 0.25)


def test_pretrained_weights_roundtrip(tmp_path) -> None:
    from rdsrn.weights import load_into, read_metadata, save_weights

    torch.manual_seed(0)
    a = create_model("rdsrn_x4")
    save_weights(tmp_path / "w.safetensors", a, {"model": "rdsrn_x4", "scale": 4})
    b = create_model("rdsrn_x4")
    meta = load_into(b, tmp_path / "w.safetensors")
    assert meta["scale"] == 4 and read_metadata(tmp_path / "w.safetensors") == meta
    x = torch.rand(1, 3, 9, 9)
    assert torch.equal(a(x), b(x))
    from rdsrn.runtimes.errors import UserError

    with pytest.raises(UserError, match="do not fit"):
        load_into(create_model("rdsrn_x2"), tmp_path / "w.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable"):
        load_into(a, tmp_path / "bad.safetensors")

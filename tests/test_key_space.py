"""The figures of benchmarks/bench_tiny_world_key_space.py, computed on the shipped tiny world."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_tiny_world_key_space as KS  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def setup():
    from alphaedit_lite.experiments.sequential import prepare

    return prepare("tiny-world", 20, layers_hint=[2], n_probes=0, eval_unedited=200, progress=False)


def test_last_token_keys_match_a_manual_forward(setup):
    prompts = [setup.world.prompt(f, 0) for f in setup.world.facts[:3]]
    K = KS.last_token_keys(setup.model, setup.tok, prompts, 2)
    seen = []
    mod = setup.model.model.layers[2].mlp.down_proj
    h = mod.register_forward_hook(lambda _m, a, _o: seen.append(a[0][0, -1].double()))
    try:
        with torch.no_grad():
            setup.model(**setup.tok(prompts[1], return_tensors="pt", add_special_tokens=False))
    finally:
        h.remove()
    assert torch.allclose(K[1], seen[0], atol=1e-5)


def test_key_space_figures_are_consistent(setup):
    loose, strict = KS.key_space(setup, 2, 2e-2), KS.key_space(setup, 2, 1e-4)
    for r in (loose, strict):
        assert r["d"] == 512 and 0 <= r["kept_null_dims"] <= 512
        assert 0 <= r["fact_key_energy_in_null_space_mean"] <= 1 and 0 < r["interaction_share"] < 1
        assert 1 <= r["fact_keys_effective_rank"] <= 512
    # a stricter threshold keeps fewer "null" directions, and less of the fact keys' energy lies there
    assert strict["kept_null_dims"] < loose["kept_null_dims"]
    assert strict["fact_key_energy_in_null_space_mean"] < loose["fact_key_energy_in_null_space_mean"]

"""Randomness in one place: the helper's contract, and no library code touches global RNG state."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ebmfit import Box, EnergyModel
from ebmfit._rng import as_generator, as_numpy_rng, as_seed_sequence, spawn_generators, spawn_seeds
from ebmfit.energies import LegendreEnergy

SRC = Path(__file__).resolve().parents[1] / "src" / "ebmfit"

# reads or writes of global RNG state (none left: checkpoints save explicit generators)
GLOBAL_RNG = re.compile(
    r"torch\.manual_seed\(|torch\.seed\(|torch\.(cuda\.)?(get|set)_rng_state\(|"
    r"np\.random\.(seed|get_state|set_state|rand|randn|randint|random|normal|uniform|choice|"
    r"permutation|shuffle)\("
)
ALLOWED: set[str] = set()


def test_int_seed_gives_torch_idiom_stream():
    a = torch.rand(5, generator=as_generator(7))
    b = torch.rand(5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_generator_is_returned_unchanged_on_its_device():
    g = torch.Generator().manual_seed(3)
    assert as_generator(g) is g
    assert as_generator(g, "cpu") is g


def test_none_is_fresh_entropy_and_leaves_global_state_alone():
    before = torch.get_rng_state().clone()
    np_before = np.random.get_state()[1].copy()  # noqa: NPY002 - checking it is untouched
    x = torch.rand(4, generator=as_generator(None))
    y = torch.rand(4, generator=as_generator(None))
    assert not torch.equal(x, y)
    as_numpy_rng(None).random(3)
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(np.random.get_state()[1], np_before)  # noqa: NPY002


def test_spawned_streams_are_independent_and_reproducible():
    s1, s2 = spawn_seeds(0, 3), spawn_seeds(0, 3)
    assert s1 == s2 and len(set(s1)) == 3
    assert spawn_seeds(0, 5)[:3] == s1  # stream k does not depend on how many there are
    gs = spawn_generators(0, 2)
    assert not torch.equal(torch.rand(8, generator=gs[0]), torch.rand(8, generator=gs[1]))
    ss = as_seed_sequence(np.random.SeedSequence(5))
    assert isinstance(ss, np.random.SeedSequence)


def test_sampling_without_a_generator_does_not_touch_global_rng():
    e = LegendreEnergy(1, 3)
    with torch.no_grad():
        e.coef.copy_(torch.tensor([0.0, 0.5, -0.3, 0.2], dtype=torch.float64))
    m = EnergyModel(e, Box.unit(1))
    before = torch.get_rng_state().clone()
    m.sample(50, method="exact")
    m.sample(8, method="mcmc", burn_in=10, n_chains=4, thin=1)
    assert torch.equal(torch.get_rng_state(), before)


def test_no_library_code_uses_global_rng_state():
    bad = []
    for path in SRC.rglob("*.py"):
        if path.name in ALLOWED:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if GLOBAL_RNG.search(code) and ">>>" not in line:
                bad.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not bad, "global RNG state used:\n" + "\n".join(bad)

"""Backbones, the reward conditioning, the size registry."""

from __future__ import annotations

import pytest
import torch
from train_fixtures import tiny_spec

from miro_data.common import MiroError
from miro_train.conditioning import ConditioningInput
from miro_train.models import build_model, count_parameters, list_models, model_config
from miro_train.spec import ModelSpec


@pytest.mark.parametrize("backbone", ["unet", "dit", "rin"])
def test_backbones_map_noise_to_a_velocity_of_the_same_shape_and_learn(backbone):
    torch.manual_seed(0)
    model = build_model(tiny_spec(backbone))
    x, t = torch.randn(4, 3, 16, 16), torch.rand(4)
    ids, rewards = torch.randint(2, 10, (4, 8)), torch.rand(4, 2)
    rewards[0, 1] = float("nan")  # one missing value, so the missing embeddings train too
    cond = ConditioningInput(rewards, ids)
    v, state = model(x, t, cond, self_cond=torch.ones(4, dtype=torch.bool))
    assert v.shape == x.shape
    assert (state is not None) == (backbone == "rin")
    # Three SGD steps: the zero-initialised layers (outputs, adaLN, res-block convs) open up
    # one after another; then every parameter gets a gradient (nothing is disconnected).
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        v, _ = model(x, t, cond, self_cond=torch.ones(4, dtype=torch.bool))
        (v - x).pow(2).mean().backward()
        opt.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == [], dead


def test_missing_reward_uses_its_learned_embedding():
    model = build_model(tiny_spec("unet"))
    tokens = model.conditioner.rewards
    values = torch.tensor([[float("nan"), 0.5], [0.0, 0.5]])
    out = tokens(values)  # (B, R, D)
    torch.testing.assert_close(out[0, 0], tokens.missing[0] + tokens.position[0])
    assert not torch.allclose(out[0, 0], out[1, 0])  # missing ≠ the lowest bin
    torch.testing.assert_close(out[0, 1], out[1, 1])


def test_baseline_has_no_reward_tokens():
    miro, base = build_model(tiny_spec("unet")), build_model(tiny_spec("unet", rewards=()))
    ids = torch.randint(2, 10, (3, 8))
    assert base.conditioner.rewards is None
    cond_miro = miro.condition(ConditioningInput(torch.rand(3, 2), ids))
    cond_base = base.condition(ConditioningInput(None, ids))
    assert cond_miro.tokens.shape[1] == cond_base.tokens.shape[1] + 2  # 2 reward tokens
    assert count_parameters(base) < count_parameters(miro)


def test_registry_lists_the_shipped_configs_and_rejects_unknown_names():
    names = list_models()
    for name in ("unet-tiny", "dit-tiny", "rin-tiny", "miro-360m", "dit-b-2"):
        assert name in names
        assert model_config(name)["backbone"] in ("unet", "dit", "rin")
    with pytest.raises(MiroError, match="unknown model"):
        model_config("nope")


def test_miro_360m_matches_the_paper_size():
    config = model_config("miro-360m")
    rewards = ["aesthetic", "clip", "pickscore", "hpsv2", "imagereward", "vqa", "sciscore"]
    image = config["image"] | {"channels": 4, "size": 32}  # SDXL's VAE: 4 × 256/8
    spec = ModelSpec.from_json(config | {"rewards": rewards, "image": image})
    with torch.device("meta"):
        model = build_model(spec)
    assert 330e6 < count_parameters(model) < 400e6
    assert model.backbone.grid**2 == 256  # patch 2 on 32×32 latents
    assert model.self_conditioning

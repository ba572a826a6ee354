"""The flow-matching objective, the Euler sampler and multi-reward CFG."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from train_fixtures import tiny_spec

from miro_train.conditioning import ConditioningInput
from miro_train.flow import euler, flow_loss, guided_velocity, logit_normal, shift_at
from miro_train.models import build_model


class Oracle(torch.nn.Module):
    """Knows the clean batch, so it can output the true velocity (x_t − x) / t = ε − x."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = x

    def forward(self, xt, t, cond, self_cond=None):
        return (xt - self.x) / t.view(-1, 1, 1, 1), None


def test_loss_is_zero_for_the_true_velocity():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 8, 8, generator=gen)
    cond = ConditioningInput(None, torch.zeros(16, 1, dtype=torch.long))  # the oracle reads none
    assert flow_loss(Oracle(x), x, cond, generator=gen) < 1e-8
    # …and clearly positive for a model that is off by a constant.
    off = flow_loss(lambda xt, t, c, **_: (Oracle(x)(xt, t, c)[0] + 0.1, None), x, cond,
                    generator=gen)  # fmt: skip
    assert off == pytest.approx(0.01, rel=1e-3)


def test_logit_normal_times_are_inside_0_1_and_centred():
    t = logit_normal(20_000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert t.min() > 0 and t.max() < 1
    assert abs(t.median() - 0.5) < 0.02


def test_time_shift_moves_the_times_toward_noise():
    # t ← s·t / (1 + (s − 1)·t) is monotone, so the median 1/2 goes to s / (1 + s).
    t = logit_normal(20_000, torch.device("cpu"), torch.Generator().manual_seed(0), shift=3.0)
    assert t.min() > 0 and t.max() < 1
    assert abs(t.median() - 0.75) < 0.02
    same = logit_normal(20_000, torch.device("cpu"), torch.Generator().manual_seed(0), shift=1.0)
    assert torch.equal(
        same, logit_normal(20_000, torch.device("cpu"), torch.Generator().manual_seed(0))
    )


def test_time_shift_share_shifts_that_share_of_the_batch_and_leaves_the_rest():
    draw = lambda shift, share=1.0: logit_normal(  # noqa: E731
        10, torch.device("cpu"), torch.Generator().manual_seed(0), shift, share
    )
    plain, shifted, half = draw(1.0), draw(3.0), draw(3.0, 0.5)
    assert torch.equal(half[:5], shifted[:5]) and torch.equal(half[5:], plain[5:])
    assert torch.equal(draw(3.0, 0.0), plain) and torch.equal(draw(3.0, 1.0), shifted)
    assert torch.equal(draw(1.0, 0.5), plain)  # no shift: the share changes nothing


def test_shift_schedule_is_constant_or_linear_from_start_to_end():
    assert [shift_at(s, 5, 3.0, None) for s in range(5)] == [3.0] * 5
    assert [shift_at(s, 5, 3.0, 1.0) for s in range(5)] == [3.0, 2.5, 2.0, 1.5, 1.0]
    assert shift_at(0, 1, 3.0, 1.0) == 3.0  # a one-step run trains at the start value


def test_euler_is_exact_on_the_straight_flow_to_a_point():
    # The flow that carries every noise sample to x* along x_t = (1 − t) x* + t ε has
    # v(x, t) = (x − x*) / t; it is straight, so Euler integration is exact at any step count.
    target = torch.tensor([[2.0, -1.0, 0.5]])
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    out = euler(lambda x, t, s: ((x - target) / t[:, None], s), noise, steps=7)
    torch.testing.assert_close(out, target.expand(4, 3), atol=1e-5, rtol=0)


def test_euler_converges_to_the_analytic_solution_of_a_linear_ode():
    # dx/dt = k·x from t = 1 to 0 has x(0) = x(1)·e^{−k}; Euler gives x(1)·(1 − k/N)^N.
    k, x1 = 1.5, torch.ones(1, 1)
    for steps in (10, 1000):
        out = euler(lambda x, t, s: (k * x, s), x1, steps=steps)
        assert out.item() == pytest.approx((1 - k / steps) ** steps, rel=1e-5)
    assert abs(out.item() - math.exp(-k)) < 1e-3


@pytest.fixture(scope="module", params=["unet", "rin"])
def model_and_conds(request):
    torch.manual_seed(0)
    model = build_model(tiny_spec(request.param)).eval()
    for p in model.parameters():  # zero-initialised outputs would make every test trivial
        p.data.add_(torch.randn_like(p) * 0.05)
    ids = torch.tensor([[2, 3, 4, 5, 6, 0, 0, 0], [2, 3, 4, 8, 9, 0, 0, 0]])
    pos = model.condition(ConditioningInput(torch.ones(2, 2), ids))
    neg = model.condition(ConditioningInput(torch.tensor([[0.0, 0.0], [0.0, float("nan")]]), ids))
    return model, pos, neg


def test_cfg_with_zero_guidance_is_the_conditional_velocity(model_and_conds):
    model, pos, neg = model_and_conds
    x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 0.7)
    guided, _ = guided_velocity(model, pos, neg, 0.0)(x, t, None)
    plain, _ = model.velocity(x, t, pos)
    torch.testing.assert_close(guided, plain)


def test_batched_cfg_equals_two_separate_forwards(model_and_conds):
    model, pos, neg = model_and_conds
    x, t, omega = torch.randn(2, 3, 16, 16), torch.full((2,), 0.4), 3.0
    with torch.no_grad():
        guided, _ = guided_velocity(model, pos, neg, omega)(x, t, None)
        v_pos, _ = model.velocity(x, t, pos)
        v_neg, _ = model.velocity(x, t, neg)
    assert not torch.allclose(v_pos, v_neg, atol=1e-4)  # the rewards do change the output
    torch.testing.assert_close(guided, v_pos + omega * (v_pos - v_neg), atol=1e-5, rtol=1e-4)


def test_guidance_applies_only_inside_its_interval(model_and_conds):
    model, pos, neg = model_and_conds
    x, omega = torch.randn(2, 3, 16, 16), 3.0
    with torch.no_grad():
        guided = guided_velocity(model, pos, neg, omega, interval=(0.3, 0.6))
        for level, inside in ((0.2, False), (0.3, True), (0.5, True), (0.9, False)):
            t = torch.full((2,), level)
            got, _ = guided(x, t, None)
            v_pos, _ = model.velocity(x, t, pos)
            v_neg, _ = model.velocity(x, t, neg)
            want = v_pos + omega * (v_pos - v_neg) if inside else v_pos
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------
# Caption guidance: the caption against none (models trained with caption dropout)
# ----------------------------------------------------------------------------


def test_without_caption_pads_word_ids_and_masks_embeddings():
    ids = torch.tensor([[2, 3, 4, 0], [5, 6, 0, 0]])
    dropped = ConditioningInput(torch.ones(2, 1), ids).without_caption(torch.tensor([True, False]))
    assert dropped.text.tolist() == [[0, 0, 0, 0], [5, 6, 0, 0]]  # row 0 as "" encodes
    assert dropped.rewards is not None and dropped.rewards.tolist() == [[1.0], [1.0]]
    emb, mask = torch.ones(2, 3, 4), torch.tensor([[True, True, False], [True, False, False]])
    dropped = ConditioningInput(None, emb, mask).without_caption(torch.tensor([False, True]))
    assert dropped.text_mask is not None
    assert dropped.text_mask.tolist() == [[True, True, False], [False, False, False]]
    assert dropped.text[0].eq(1).all() and dropped.text[1].eq(0).all()


def test_caption_and_reward_guidance_batched_equal_separate_forwards(model_and_conds):
    model, pos, neg = model_and_conds
    ids = torch.tensor([[2, 3, 4, 5, 6, 0, 0, 0], [2, 3, 4, 8, 9, 0, 0, 0]])
    none = ConditioningInput(torch.ones(2, 2), ids).without_caption(torch.ones(2, dtype=torch.bool))
    unc = model.condition(none)
    x, t, omega, omega_c = torch.randn(2, 3, 16, 16), torch.full((2,), 0.4), 3.0, 2.0
    with torch.no_grad():
        v_pos, _ = model.velocity(x, t, pos)
        v_neg, _ = model.velocity(x, t, neg)
        v_unc, _ = model.velocity(x, t, unc)
        both, _ = guided_velocity(model, pos, neg, omega, uncaptioned=unc, caption_omega=omega_c)(
            x, t, None
        )
        caption_only, _ = guided_velocity(model, pos, None, 0.0, uncaptioned=unc,
                                          caption_omega=omega_c)(x, t, None)  # fmt: skip
    assert not torch.allclose(v_pos, v_unc, atol=1e-4)  # the caption does change the output
    want = v_pos + omega * (v_pos - v_neg) + omega_c * (v_pos - v_unc)
    torch.testing.assert_close(both, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(caption_only, v_pos + omega_c * (v_pos - v_unc), atol=1e-5,
                               rtol=1e-4)  # fmt: skip


@pytest.mark.parametrize("backbone", ["unet", "rin"])
def test_an_x_predicting_model_turns_its_clean_image_into_the_velocity(backbone):
    # The same weights read as x̂ give v = (x_t − x̂) / max(t, 0.05): exact where t ≥ 0.05,
    # the clamp bounding the division near the data.
    torch.manual_seed(0)
    v_model = build_model(tiny_spec(backbone)).eval()
    for p in v_model.parameters():  # zero-initialised outputs would make the test trivial
        p.data.add_(torch.randn_like(p) * 0.05)
    x_model = build_model(replace(tiny_spec(backbone), prediction="x")).eval()
    x_model.load_state_dict(v_model.state_dict())  # x-prediction adds no parameter
    ids = torch.tensor([[2, 3, 4, 0], [5, 6, 0, 0], [2, 7, 0, 0]])
    cond = v_model.condition(ConditioningInput(torch.ones(3, 2), ids))
    xt, t = torch.randn(3, 3, 16, 16), torch.tensor([0.9, 0.3, 0.01])
    with torch.no_grad():
        out, _ = v_model.velocity(xt, t, cond)  # what both backbones output
        v, _ = x_model.velocity(xt, t, cond)
    expected = (xt - out) / torch.tensor([0.9, 0.3, 0.05]).view(3, 1, 1, 1)
    torch.testing.assert_close(v, expected)

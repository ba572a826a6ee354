"""Reward models: the registry and everything registered in it.

Importing this package registers every shipped reward. Learned rewards import their heavy
dependencies (torch, open_clip, transformers) only when built.
"""

from miro_data.rewards import (
    catalog,  # noqa: F401 — registers the learned rewards (lazily)
    classic,  # noqa: F401 — registers the weight-free rewards
)
from miro_data.rewards.base import (
    REGISTRY,
    Reward,
    RewardContext,
    RewardSpec,
    WeightStatus,
    build_reward,
    check_reward_names,
    load_reward_options,
    register,
    score_all,
)

__all__ = [
    "REGISTRY",
    "Reward",
    "RewardContext",
    "RewardSpec",
    "WeightStatus",
    "build_reward",
    "check_reward_names",
    "load_reward_options",
    "register",
    "score_all",
]

"""Command inputs that set a config field from more than one option, shared by commands.

The text of single options (names, numbers, KEY=VALUE lists) is read by the parsers in
miro_data/options.py, declared on the config fields; these read files and combine options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

RewardsConfig = Annotated[
    Path | None, typer.Option("--rewards-config", help="TOML/JSON file of per-reward options.")
]
RewardOption = Annotated[
    list[str] | None, typer.Option("--reward-option", help="REWARD.KEY=VALUE, repeatable.")
]


def reward_options(
    rewards_config: RewardsConfig = None, reward_option: RewardOption = None
) -> dict[str, Any]:
    """--rewards-config FILE and --reward-option REWARD.KEY=VALUE → the config's reward_options."""
    from miro_data.rewards import load_reward_options

    return {"reward_options": load_reward_options(rewards_config, reward_option or ())}

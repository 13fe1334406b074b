"""Learning rates of the NeRF stage follow the same schedules as every other schedulable key."""

import pytest
import torch

from sds3d.config import load_config
from sds3d.errors import ConfigError
from sds3d.train import build_optimizer, nerf_stage, scheduled_group, set_learning_rates


def test_a_scheduled_group_moves_its_learning_rate_and_a_plain_one_stays():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.Adam([scheduled_group([params[0]], [0, 0.01, 0.002, 1.0]), {"params": [params[1]], "lr": 0.5}])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    set_learning_rates(optimizer, 300, 400)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 + 0.75 * (0.002 - 0.01))
    set_learning_rates(optimizer, 400, 400)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.002, 0.5])
    # the schedule travels with the optimiser's state, so a resumed run keeps it
    assert optimizer.state_dict()["param_groups"][0]["lr_schedule"] == [0, 0.01, 0.002, 1.0]


class ParameterFreeObjective(torch.nn.Module):
    lr = 0.0


def test_the_nerf_stage_schedules_the_fields_encoding_and_network():
    cfg = load_config(overrides=["train.lr_network=[0,0.01,0.001,1.0]", "train.lr_encoding=0.02"], prompt="a red cube")
    stage = nerf_stage(cfg)
    optimizer = build_optimizer(stage.param_groups, ParameterFreeObjective(), cfg.train)
    set_learning_rates(optimizer, cfg.train.steps // 2, cfg.train.steps)
    encoding, network = optimizer.param_groups[:2]
    assert (encoding["lr"], network["lr"]) == pytest.approx((0.02, 0.0055))


def test_a_malformed_learning_rate_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="train.lr_network"):
        load_config(overrides=["train.lr_network=[0,0.01]"], prompt="a red cube")

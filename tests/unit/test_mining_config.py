"""``MiningConfig``: profiles, round trips, validation and the resolved thresholds."""

from __future__ import annotations

import json
import math

import pytest

from lmsan.errors import ConfigError
from lmsan.mining import MiningConfig


def test_default_and_reference_profiles_differ_where_the_code_differs():
    default, reference = MiningConfig.profile("default"), MiningConfig.profile("reference")
    assert default == MiningConfig()
    assert default.reset_adam and not reference.reset_adam
    assert (default.grad_test, reference.grad_test) == ("abs", "signed")
    assert (default.pv_average, reference.pv_average) == ("full_pass", "last_batch")
    assert reference.dedup_from_converge and not default.dedup_from_converge
    assert reference.aux == "recompute" and reference.parallel_seeds == 1
    assert not (reference.early_accept or reference.abort_div_margin or reference.clamp_prompt)
    assert reference.batching == "random" and reference.early_abort_frac == 0
    assert reference.max_clean_overlap == 1.0 and default.max_clean_overlap < 1  # the reference keeps natural PVs
    # knobs method.md gives both the same value
    for name in ("prompt_len", "max_insert_pos", "epochs", "batch_size", "abort_after_epoch", "lambda_path",
                 "lr_rel", "converge_rel", "div_margin", "div_scale"):
        assert getattr(default, name) == getattr(reference, name)


def test_round_trip_through_json():
    config = MiningConfig.profile("reference", target="mask", max_loops=7, patience=3)
    again = MiningConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize("name", ["default", "reference"])
def test_every_profile_round_trips(name):
    config = MiningConfig.profile(name)
    assert MiningConfig.from_dict(config.to_dict()) == config


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="'lr_typo'"):
        MiningConfig.from_dict({"lr_typo": 1})
    with pytest.raises(ConfigError, match="'nope'"):
        MiningConfig().replace(nope=1)
    with pytest.raises(ConfigError, match="unknown profile"):
        MiningConfig.profile("fast")


@pytest.mark.parametrize("change", [
    {"target": "pooler"}, {"batch_size": 1}, {"epochs": 0}, {"converge_rel": 0}, {"lr_abs": -1.0},
    {"grad_test": "max"}, {"early_abort_frac": 1.0}, {"patience": -1}, {"max_clean_overlap": 1.5},
    {"max_clean_overlap": -0.1},
])
def test_bad_values_are_config_errors(change):
    with pytest.raises(ConfigError):
        MiningConfig().replace(**change)


def test_replace_returns_a_new_value():
    config = MiningConfig()
    other = config.replace(max_loops=3)
    assert config.max_loops == 0 and other.max_loops == 3


def test_thresholds_are_relative_to_the_feature_scale_unless_absolute():
    config = MiningConfig(converge_rel=2.0, dedup_rel=0.5, div_margin=0.01)
    t = config.thresholds(0.25)
    assert t["T_L"] == pytest.approx(-0.5)
    assert t["T_dedup"] == pytest.approx(0.125)
    assert t["T_div"] == pytest.approx(-math.log(32) + 0.01)
    absolute = config.replace(converge_abs=0.2, dedup_abs=0.3, div_abs=-3.446).thresholds(0.25)
    assert absolute == {"T_L": -0.2, "T_dedup": 0.3, "T_div": -3.446}
    # the reference reuses |T_L| for de-duplication
    assert MiningConfig.profile("reference").thresholds(1.0)["T_dedup"] == pytest.approx(2.0)
    # T_div follows B
    assert config.replace(batch_size=16).thresholds(1.0)["T_div"] == pytest.approx(-math.log(16) + 0.01)


def test_loops_and_slots_defaults():
    assert MiningConfig().loops == 10  # detect after a trigger sweep that found nothing
    assert MiningConfig(sweep=False).loops == 30
    assert MiningConfig.profile("reference").loops == 30
    assert MiningConfig(mode="search").loops == 1000
    assert MiningConfig(max_loops=5).loops == 5
    assert MiningConfig().slots("cpu") == 1 and MiningConfig().slots("cuda:0") == 16
    assert MiningConfig(parallel_seeds=3).slots("cpu") == 3


@pytest.mark.parametrize("change, expected", [
    ({"lr_rel": "fast"}, "lr_rel must be a finite float"),
    ({"grad_threshold": "x"}, "grad_threshold must be a finite float"),
    ({"confirm": "false"}, "confirm must be a bool"),
    ({"early_accept": 1}, "early_accept must be a bool"),
    ({"epochs": True}, "epochs must be an int"),
    ({"max_loops": 5.0}, "max_loops must be an int"),
    ({"lr_abs": "1e-4"}, "lr_abs must be a finite float or None"),
    ({"lambda_path": float("nan")}, "lambda_path must be a finite float"),
    ({"mode": 3}, "mode must be one of"),
    ({"target": None}, "target must be one of"),
])
def test_every_field_is_type_checked_from_its_annotation(change, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        MiningConfig.from_dict(change)
    assert repr(next(iter(change.values()))) in str(info.value)  # names the value it got


def test_type_checks_accept_ints_for_floats_and_none_for_optionals():
    config = MiningConfig.from_dict({"lr_rel": 1, "grad_threshold": 0, "lr_abs": None, "confirm": False})
    assert config.lr_rel == 1 and config.lr_abs is None and config.confirm is False


def test_new_fields_are_type_checked_without_listing_them():
    """The check reads the annotations, so a field added later is covered automatically."""
    from dataclasses import fields

    for f in fields(MiningConfig):
        with pytest.raises(ConfigError, match=f"^{f.name} must be"):
            MiningConfig.from_dict({f.name: object()})

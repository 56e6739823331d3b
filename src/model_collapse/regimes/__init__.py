"""Regime registry: name -> (config class, constructor(cfg))."""

from .basic import (Accumulate, AccumulateConfig, AccumulateSubsampleConfig, Mix,
                    MixConfig, Replace, ReplaceConfig, Schedule, ScheduleConfig)

REGIMES = {
    "replace": (ReplaceConfig, Replace),
    "accumulate": (AccumulateConfig, Accumulate),
    "accumulate-subsample": (AccumulateSubsampleConfig, Accumulate),
    "mix": (MixConfig, Mix),
    "schedule": (ScheduleConfig, Schedule),
}

"""Regime registry: name -> config class (which builds the regime)."""

from .basic import AccumulateConfig, AccumulateSubsampleConfig, MixConfig, ReplaceConfig, ScheduleConfig

REGIMES = {
    "replace": ReplaceConfig,
    "accumulate": AccumulateConfig,
    "accumulate-subsample": AccumulateSubsampleConfig,
    "mix": MixConfig,
    "schedule": ScheduleConfig,
}

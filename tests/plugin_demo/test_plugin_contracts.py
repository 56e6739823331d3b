"""The plugin's own contract tests: each component subclasses model_collapse.testing's base class,
as any plugin package's tests would (run here with the lab's suite)."""

from model_collapse.testing import FamilyContract, FilterContract, MetricContract


class TestLaplace(FamilyContract):
    family = {"kind": "mc_plugin_demo:LaplaceConfig"}
    source = {"kind": "gaussian"}


class TestCentral(FilterContract):
    filter = {"kind": "mc_plugin_demo:CentralConfig", "width": 3.0}


class TestSpread(MetricContract):
    metric = {"name": "mc_plugin_demo:spread", "q": 0.75}
    model = {"kind": "mc_plugin_demo:LaplaceConfig"}
    source = {"kind": "gaussian"}

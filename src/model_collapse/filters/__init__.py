"""Filter registry: name -> config class (which declares its needs and builds the filter).

A filter curates or verifies a generation's samples before they are reused:
built with its parameters and the source (so it can reach the reference
classifier or the true density), it sees the model and a batch of samples and
returns which to keep. The loop (stage.py) draws more until every chain has
the count the regime needs, and records the acceptance rate per chain.
"""

from .basic import NoFilterConfig, RandomFilterConfig

FILTERS = {
    "none": NoFilterConfig,
    "random": RandomFilterConfig,
}

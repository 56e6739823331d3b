"""Filter registry: name -> config class (which declares its needs and builds the filter).

A filter curates or verifies a generation's samples before they are reused:
built with its parameters and the source (so it can reach the reference
classifier or the true density), it sees the model and a batch of samples and
returns which to keep. The loop (stage.py) draws more until every chain has
the count the regime needs, and records the acceptance rate per chain.

Optional hooks the loop uses when a filter object has them (interfaces.py):
`begin()` (called before a generation's first round; dedupe forgets the
previous generation), `first_draw(n)` (the first round's size: select),
`transform()` (samples mapped before the keep mask: correct, correct-kmeans) with `columns()`
(its own columns beside accept_rate), and
`state_dict()` / `load_state_dict()` (saved in every checkpoint under filter/,
so a resumed run filters exactly as an uninterrupted one; likelihood under: gen0
keeps the generation-0 model this way).
"""

from .basic import NoFilterConfig, RandomFilterConfig
from .classifier import ConfidenceFilterConfig, VerifierFilterConfig
from .correct import CorrectFilterConfig, KMeansCorrectFilterConfig
from .dedupe import DedupeFilterConfig
from .likelihood import LikelihoodFilterConfig
from .select import SelectFilterConfig

FILTERS = {
    "none": NoFilterConfig,
    "random": RandomFilterConfig,
    "confidence": ConfidenceFilterConfig,
    "likelihood": LikelihoodFilterConfig,
    "verifier": VerifierFilterConfig,
    "dedupe": DedupeFilterConfig,
    "select": SelectFilterConfig,
    "correct": CorrectFilterConfig,
    "correct-kmeans": KMeansCorrectFilterConfig,
}

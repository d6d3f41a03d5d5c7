"""ichflax: intracranial hemorrhage detection on head CT slices with JAX/Flax.

Research and education use only; not a medical device.

The package reads as the pipeline: data -> models (+ weights) -> train -> evaluate -> serve.
"""

__version__ = "0.1.0"

"""The serving use cases over the loaded models: predictions, ensembles, explanations, batching.

Its public face, for the command line and for training's evaluation of a bundle as it is served:
`load_predictor` (manifest → checksums → sessions) and the `Predictor` it returns.
"""

from service.inference.predictor import Prediction, Predictor, load_predictor

__all__ = ["Prediction", "Predictor", "load_predictor"]

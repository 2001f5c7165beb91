"""Model loading, preprocessing, ensembles: everything but HTTP."""

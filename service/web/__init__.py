"""The single page at `/`: upload a radiograph, see the probabilities, ensembles and Grad-CAM overlays."""

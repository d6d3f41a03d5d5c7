"""Serving: the Predictor, series summaries, Grad-CAM pictures, the predict CLI. Never imports
training."""

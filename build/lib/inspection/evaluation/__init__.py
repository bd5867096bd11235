"""Scoring a model on the splits and under the robustness and out-of-distribution batteries."""

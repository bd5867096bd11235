"""The pipeline's stages, one short script per dvc.yaml stage: python -m stages.<name> (dvc repro runs them)."""

"""The five pipeline stages (download, split, train, evaluate, export) and their shared helpers.

Run a stage as ``python -m stages.<name>``; ``dvc repro`` does that for you.
"""

"""Entry points outside the pipeline: the batch CLI (commands.predict), the bundle server (commands.serve), relog."""

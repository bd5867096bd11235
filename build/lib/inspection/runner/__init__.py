"""Running a stage: the entry-point wrapper, the checks before any work, the parent watch."""

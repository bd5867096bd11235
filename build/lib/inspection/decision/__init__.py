"""The line's decision as pure functions: the route rule, operating-point metrics, camera perturbations."""

"""ML studies (what a choice of objective, backbone or budget buys), mostly thin callers of
LensBench: `python -m experiments.studies.NAME --help`."""

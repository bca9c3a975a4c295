"""Release identity. This copy describes the development head; build_releases.py writes the
real one into every release artifact."""

VERSION = "0.0.0"
MODULES = ("electricity", "water", "gas", "carbon", "pv")
DEFECT = None

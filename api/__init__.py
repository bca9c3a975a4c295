"""emsops HTTP API, job runner and command line."""

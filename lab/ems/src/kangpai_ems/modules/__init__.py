"""Optional product modules: a file here ships only in releases that provide that module."""

"""Library behind models/export.py: see that script's docstring and models/README.md."""

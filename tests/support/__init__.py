"""Importable helpers of the test suite, one module per kind (fixtures stay in conftest.py
files and may use these; no test imports from a conftest.py)."""

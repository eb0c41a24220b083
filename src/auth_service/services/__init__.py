"""Use cases, framework-free: each function gets what it needs passed in."""

"""Fuzzing: schemathesis against the app's own OpenAPI, hypothesis on the parsers."""

"""Shared test helpers: the simulated faulty disk and other fixtures' building blocks."""

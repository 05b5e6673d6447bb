"""Simulators for end-to-end tests: real kernel behaviour reproduced on the test machine."""

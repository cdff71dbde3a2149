"""Behavioral segments: definition (model), SQL (compiler), words (explain), evaluation."""

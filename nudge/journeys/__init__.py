"""Journeys: multi-step automation with durable per-user state (docs/journeys.md)."""

"""Real-time analytics reports over an account store: exact, from live data."""

"""Delivery channels: one module per channel, one interface (:mod:`.base`)."""

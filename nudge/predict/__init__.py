"""Predictive segments: RFM computed live, and intent / churn models trained per goal."""

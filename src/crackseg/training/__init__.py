"""Training a stage with Catalyst: configuration, runners, losses."""

"""What users read: tables, plots, the inspection report."""

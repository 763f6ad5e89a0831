"""Dagster definitions of wan_pipeline: one asset group per story file (see ``assets.definitions``)."""

"""Datasets behind the task families (read locally, never downloaded)."""

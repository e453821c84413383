"""Runs: jobs, recipes, reports and deployment."""

"""Workflow and Step models, the engine, locks and the reconciler (issue: workflow engine)."""

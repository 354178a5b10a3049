"""sbrtplan.batch (under construction)."""

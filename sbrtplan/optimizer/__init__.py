"""sbrtplan.optimizer (under construction)."""

"""sbrtplan.evaluation (under construction)."""

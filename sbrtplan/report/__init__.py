"""sbrtplan.report (under construction)."""

"""sbrtplan.io (under construction)."""

"""physics/process package."""

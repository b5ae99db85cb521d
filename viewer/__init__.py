"""The browser viewer and pyvista views (issue 5: not built yet)."""

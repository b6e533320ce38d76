"""Recipes of the example images (package data: Dockerfiles and hooks)."""

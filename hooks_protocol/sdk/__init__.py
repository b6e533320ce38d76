"""The hook-author SDK, shipped as a single file to copy into images."""

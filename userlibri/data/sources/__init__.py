"""Readers for the public-domain book texts that ship inside registry packages (Debian, npm)."""

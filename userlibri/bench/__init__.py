"""userlibri.bench."""

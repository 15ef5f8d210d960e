"""userlibri.decode."""

"""userlibri.data."""

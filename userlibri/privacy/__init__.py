"""userlibri.privacy."""

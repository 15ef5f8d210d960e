"""userlibri.text."""

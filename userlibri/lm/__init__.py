"""userlibri.lm."""

"""userlibri.asr."""

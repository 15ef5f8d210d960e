"""userlibri: on-device speech personalization from text alone."""

__version__ = "0.1.0"

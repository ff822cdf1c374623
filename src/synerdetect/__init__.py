"""SynerDetect."""

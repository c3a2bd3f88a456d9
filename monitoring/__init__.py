"""Monitoring: Prometheus metrics (``monitoring.metrics``); VOC, drift and the ops dashboard come next."""

"""The embedded dev stack launcher (tansu Kafka broker, MLflow server); later Airflow, and the configs
(Prometheus rules, Grafana dashboards) and production manifests."""

from .stack import Broker, ServiceStatus, StackError, down, start_broker, status, tansu_binary, up

__all__ = ["Broker", "ServiceStatus", "StackError", "down", "start_broker", "status", "tansu_binary", "up"]

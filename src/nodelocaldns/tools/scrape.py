"""A Prometheus Operator ServiceMonitor for the metrics Service (``render --service-monitor``).

The ``prometheus.io/*`` annotations can name one port only, so annotation-based scraping never
reaches the agent's own registry on 9353 (``coredns_nodecache_setup_errors_total``, which the
dashboard's setup-error panels need). A ServiceMonitor lists every metrics port of the Service.
The same object is deploy/monitoring/servicemonitor.yaml; a test renders both.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

# Service port names that carry Prometheus text.
METRICS_PORT_NAMES = ("metrics", "setup-metrics")


def service_monitor(service: Obj) -> Obj:
    """A ServiceMonitor (monitoring.coreos.com/v1) scraping every metrics port of ``service``."""
    meta = service["metadata"]
    ports = [p["name"] for p in service["spec"]["ports"] if p.get("name") in METRICS_PORT_NAMES]
    # No namespaceSelector: a ServiceMonitor then selects Services in its own namespace, which
    # stays right when kustomize's namespace transformer moves both.
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": dict(meta["labels"])},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": meta["labels"]["k8s-app"]}},
            "endpoints": [{"port": name} for name in ports],
        },
    }
